package kubeevents

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/fakeagent"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/boltstore"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// syslogQueue stands for the syslog forwarder's queue.
type syslogQueue struct {
	mu  sync.Mutex
	got []events.Event
}

func (q *syslogQueue) Enqueue(es ...events.Event) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.got = append(q.got, es...)
	return nil
}

// TestIntakeWithAHangingAPIServer: the provisioner's intake, with syslog
// and this sink behind it as the command wires them, stays fast and hands
// syslog every event while the API server never answers.
func TestIntakeWithAHangingAPIServer(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "registry.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// A claimed volume: the sink's worker goes to the API server for it.
	if err := st.CreateVolume(context.Background(), volumeOf("vol-1", storageclass.Metadata{PVName: "pvc-1", PVCName: "c", PVCNamespace: "ns"})); err != nil {
		t.Fatal(err)
	}
	client, err := typedcorev1.NewForConfig(&rest.Config{Host: "http://" + silentServer(t), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	kube, m := startSink(t, client, st, 8)
	syslog := &syslogQueue{}
	svc, err := provisioner.New(provisioner.Options{Store: st, Agents: fakeagent.New(), Events: provisioner.FanOut(syslog, kube)})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	start := time.Now()
	for i := range n {
		if _, err := svc.RecordEvents(context.Background(), events.Event{Time: start, Type: events.VolumeDegraded,
			Volume: "vol-1", Replicas: []string{"r1"}, Message: string(rune('a' + i%26))}); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("%d events took %v through the intake with the API server hanging", n, d)
	}
	if len(syslog.got) != n {
		t.Errorf("syslog got %d events, want %d", len(syslog.got), n)
	}
	t.Logf("%d events through the intake in %v; Kubernetes sink: dropped %d", n, time.Since(start).Round(time.Millisecond), outcome(m, OutcomeDropped))
	if outcome(m, OutcomeDropped) < n-8-1 {
		t.Errorf("dropped %d of %d with a queue of 8", outcome(m, OutcomeDropped), n)
	}
}
