package provisioner_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/boltstore"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/etcdstore"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/etcdstore/etcdtest"
)

// BenchmarkCreateDeleteVolume measures volumes created and deleted per
// second through the service with three (fake, in-memory) agents, per store
// backend: the cost of placement, the registry writes and the service
// logic. Real agents add their own gRPC and configfs time on top.
// benchStore opens a fresh store of the named backend ("bolt", "etcd"),
// leading; etcd runs a throwaway server (skipped when not installed).
func benchStore(b *testing.B, name string) store.Store {
	b.Helper()
	if name == "bolt" {
		st, err := boltstore.Open(filepath.Join(b.TempDir(), "registry.db"), boltstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		return st
	}
	bin := etcdtest.Binary()
	if bin == "" {
		b.Skip(etcdtest.ErrNoEtcd)
	}
	srv, err := etcdtest.Start(bin)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Stop)
	st, err := etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: []string{srv.Endpoint}})
	if err != nil {
		b.Fatal(err)
	}
	// Only the leader acts: campaign and wait to win.
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	ch, err := st.Leader(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		b.Fatal("not elected")
	}
	return st
}

// BenchmarkCreateDeleteVolume measures volumes created and deleted per
// second through the service with three in-memory fake agents, per store
// backend: placement, registry writes and service logic only. See
// BenchmarkRealAgentsCreateDelete for real agents.
func BenchmarkCreateDeleteVolume(b *testing.B) {
	for _, name := range []string{"bolt", "etcd"} {
		b.Run(name, func(b *testing.B) {
			st := benchStore(b, name)
			defer st.Close()
			e := newEnvWithStore(b, st, threeRacks(), provisioner.Options{})
			i := 0
			start := time.Now()
			for b.Loop() {
				v, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: fmt.Sprintf("pvc-%d", i), SizeBytes: gib, Parameters: map[string]string{"numReplicas": "3"}})
				if err != nil {
					b.Fatal(err)
				}
				if err := e.svc.DeleteVolume(e.ctx, v.ID); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(i)/time.Since(start).Seconds(), "volumes/s")
		})
	}
}
