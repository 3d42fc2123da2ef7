package etcdstore

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/etcdstore/etcdtest"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/storetest"
)

// The tests share one etcd server (Debian's etcd-server, 3.4 on Debian 12)
// started on loopback with random ports and a temporary data directory;
// each test uses its own key prefix.
var (
	endpoint   string
	skipReason string
	prefixSeq  atomic.Int64
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	bin := etcdtest.Binary()
	if bin == "" {
		if os.Getenv(etcdtest.RequireEnv) == "1" {
			fmt.Fprintln(os.Stderr, etcdtest.RequireEnv+"=1 but no etcd binary (apt-get install etcd-server)")
			return 1
		}
		skipReason = etcdtest.ErrNoEtcd
		return m.Run()
	}
	srv, err := etcdtest.Start(bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start etcd:", err)
		return 1
	}
	defer srv.Stop()
	endpoint = srv.Endpoint
	fmt.Fprintln(os.Stderr, "etcd server:", etcdtest.Version(bin))
	return m.Run()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func newStore(t testing.TB, prefix string, ttl time.Duration) *Store {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{Endpoints: []string{endpoint}, Prefix: prefix, EventRetention: storetest.Retention, SessionTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func uniquePrefix() string {
	return fmt.Sprintf("/test-%d-%d/", time.Now().UnixNano(), prefixSeq.Add(1))
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return newStore(t, uniquePrefix(), 2*time.Second)
	})
}

// TestConcurrentClientsLoseNothing runs the compare-and-swap across two
// separate clients, i.e. two provisioner processes.
func TestConcurrentClientsLoseNothing(t *testing.T) {
	prefix := uniquePrefix()
	a, b := newStore(t, prefix, 2*time.Second), newStore(t, prefix, 2*time.Second)
	defer a.Close()
	defer b.Close()
	ctx := context.Background()
	if err := a.CreateVolume(ctx, storetest.NewVolume("v1", "pvc-1")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, s := range []*Store{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if _, err := s.UpdateVolume(ctx, "v1", func(v *store.Volume) error { v.SizeBytes++; return nil }); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	v, err := b.GetVolume(ctx, "v1")
	if err != nil || v.SizeBytes != 1<<30+80 {
		t.Fatalf("size +%d, %v; want +80", v.SizeBytes-1<<30, err)
	}
}

// TestLeaderFailover: two provisioners campaign; exactly one leads; when it
// stops (resigns) the other takes over.
func TestLeaderFailover(t *testing.T) {
	prefix := uniquePrefix()
	a, b := newStore(t, prefix, 2*time.Second), newStore(t, prefix, 2*time.Second)
	defer a.Close()
	defer b.Close()
	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	ctxB, cancelB := context.WithCancel(context.Background())
	defer cancelB()
	chA, err := a.Leader(ctxA, "a")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-chA:
		if !v {
			t.Fatal("a: first report false")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a not leader")
	}
	chB, err := b.Leader(ctxB, "b")
	if err != nil {
		t.Fatal(err)
	}
	// b must not become leader while a holds it. Absence cannot be waited
	// for as a condition; half a second is hundreds of loopback round
	// trips, ample for a wrongly granted election to show.
	select {
	case v := <-chB:
		t.Fatalf("b reported %v while a leads", v)
	case <-time.After(500 * time.Millisecond):
	}
	if !a.IsLeader() || b.IsLeader() {
		t.Fatalf("IsLeader a=%v b=%v, want true/false", a.IsLeader(), b.IsLeader())
	}
	cancelA()
	select {
	case v := <-chB:
		if !v {
			t.Fatal("b: first report false")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b did not take over within 10 s of a resigning")
	}
	if !b.IsLeader() {
		t.Error("b.IsLeader false after elected")
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.IsLeader() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if a.IsLeader() {
		t.Error("a still reports leadership after resigning")
	}
}

func TestOpenFailsFastOnDeadEndpoint(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Open(context.Background(), Options{Endpoints: []string{fmt.Sprintf("http://127.0.0.1:%d", port)}, DialTimeout: 500 * time.Millisecond})
	if err == nil {
		t.Fatal("Open of a dead endpoint succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open took %v to fail", d)
	}
}

func BenchmarkCreateGetDelete(b *testing.B) {
	s := newStore(b, uniquePrefix(), 2*time.Second)
	defer s.Close()
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("v%d", i)
		i++
		if err := s.CreateVolume(ctx, storetest.NewVolume(id, "pvc-"+id)); err != nil {
			b.Fatal(err)
		}
		if _, err := s.GetVolumeByName(ctx, "pvc-"+id); err != nil {
			b.Fatal(err)
		}
		if err := s.DeleteVolume(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}
