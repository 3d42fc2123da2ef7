package healer

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

func someEvents(n int) []events.Event {
	var out []events.Event
	for i := range n {
		out = append(out, events.Event{Type: events.HostDisconnected, Time: t0.Add(time.Duration(i) * time.Second), Node: "node-a", StorageNode: "sn-1"})
	}
	return out
}

func TestQueueOutageThenDelivery(t *testing.T) {
	prov := newFakeProv(nil)
	clk := clocktesting.NewFakeClock(t0)
	q, err := OpenEventQueue(filepath.Join(t.TempDir(), "events.db"), 0, prov, clk)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	prov.setDown(true)
	if err := q.Enqueue(someEvents(3)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	// The sender fails and waits on its backoff timer.
	waitFor(t, func() bool { return clk.HasWaiters() })
	if q.Len() != 3 || len(prov.delivered()) != 0 {
		t.Fatalf("len %d delivered %d", q.Len(), len(prov.delivered()))
	}
	prov.setDown(false)
	clk.Step(q.MinBackoff)
	waitFor(t, func() bool { return q.Len() == 0 })
	got := prov.delivered()
	if len(got) != 3 || got[0].ID != EventID(got[0]) || !got[0].Time.Equal(t0) || !got[2].Time.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("delivered %+v", got)
	}
	// Enqueue wakes the sender at once.
	if err := q.Enqueue(someEvents(1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(prov.delivered()) == 4 })
	cancel()
	<-done
}

func TestQueueRestartResendsPending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	prov := newFakeProv(nil)
	prov.setDown(true)
	q, err := OpenEventQueue(path, 0, prov, clocktesting.NewFakeClock(t0))
	if err != nil {
		t.Fatal(err)
	}
	evs := someEvents(150)
	if err := q.Enqueue(evs); err != nil {
		t.Fatal(err)
	}
	if err := q.Flush(context.Background()); err == nil {
		t.Fatal("flush succeeded during an outage")
	}
	q.Close() // the plugin dies

	prov.setDown(false)
	prov.failNext = 1
	q, err = OpenEventQueue(path, 0, prov, clocktesting.NewFakeClock(t0))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Len() != 150 {
		t.Fatalf("pending after restart: %d", q.Len())
	}
	if err := q.Flush(context.Background()); err == nil {
		t.Fatal("transient failure not reported")
	}
	if err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := prov.delivered()
	if len(got) != 150 || q.Len() != 0 || len(prov.reports) != 2 {
		t.Fatalf("delivered %d in %d batches, left %d", len(got), len(prov.reports), q.Len())
	}
	for i, r := range got {
		if r.ID != EventID(evs[i]) {
			t.Fatalf("event %d out of order or with another ID", i)
		}
	}
}

type rejecting struct{ calls int }

func (r *rejecting) ReportEvents(context.Context, ...events.Event) error {
	r.calls++
	return fmt.Errorf("bad event: %w", ErrRejected)
}

func TestQueueDropsRejected(t *testing.T) {
	sink := &rejecting{}
	q, err := OpenEventQueue(filepath.Join(t.TempDir(), "events.db"), 0, sink, clocktesting.NewFakeClock(t0))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.Enqueue(someEvents(2)); err != nil {
		t.Fatal(err)
	}
	// The batch, then each event on its own: every one is refused.
	if err := q.Flush(context.Background()); err != nil || q.Len() != 0 || sink.calls != 3 {
		t.Fatalf("err %v len %d calls %d", err, q.Len(), sink.calls)
	}
}

// validating accepts what the provisioner's intake accepts (Validate) and
// refuses a batch holding anything else, as InvalidArgument.
type validating struct{ got []events.Event }

func (v *validating) ReportEvents(_ context.Context, es ...events.Event) error {
	for _, e := range es {
		if err := e.Validate(); err != nil {
			return fmt.Errorf("%v: %w", err, volume.ErrInvalidArgument)
		}
	}
	v.got = append(v.got, es...)
	return nil
}

// One event the provisioner refuses must not take the good events of its
// batch with it: only the refused one is set aside.
func TestQueueDropsOnlyTheRejectedEvent(t *testing.T) {
	sink := &validating{}
	q, err := OpenEventQueue(filepath.Join(t.TempDir(), "events.db"), 0, sink, clocktesting.NewFakeClock(t0))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	evs := someEvents(3)
	evs[1].Message = strings.Repeat("x", events.MaxMessageLength+1)
	if err := q.Enqueue(evs); err != nil {
		t.Fatal(err)
	}
	if err := q.Flush(context.Background()); err != nil || q.Len() != 0 {
		t.Fatalf("Flush: %v, %d left", err, q.Len())
	}
	if len(sink.got) != 2 || !sink.got[0].Time.Equal(evs[0].Time) || !sink.got[1].Time.Equal(evs[2].Time) {
		t.Fatalf("delivered %+v, want the first and the third event", sink.got)
	}
}

// waitFor polls cond: the goroutine under test runs on the real scheduler,
// while every timer it uses is on the fake clock.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// slowSink records every event it is sent, taking a while per call, as a
// provisioner does.
type slowSink struct {
	mu  sync.Mutex
	ids map[string]int
}

func (s *slowSink) ReportEvents(_ context.Context, es ...events.Event) error {
	time.Sleep(20 * time.Millisecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range es {
		s.ids[e.ID]++
	}
	return nil
}

func (s *slowSink) count() (events, max int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.ids {
		events++
		if n > max {
			max = n
		}
	}
	return events, max
}

// The node plugin started the sender twice (the healer's Run and its
// wiring), and both loops sent the same events: every event reached syslog
// twice. However many times Run is called, one loop sends.
func TestQueueRunTwiceSendsEachEventOnce(t *testing.T) {
	sink := &slowSink{ids: map[string]int{}}
	q, err := OpenEventQueue(filepath.Join(t.TempDir(), "events.db"), 0, sink, clocktesting.NewFakeClock(t0))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.Enqueue(someEvents(5)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); q.Run(ctx) }()
	}
	waitFor(t, func() bool { n, _ := sink.count(); return n == 5 && q.Len() == 0 })
	if err := q.Enqueue(someEvents(7)[5:]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { n, _ := sink.count(); return n == 7 && q.Len() == 0 })
	time.Sleep(50 * time.Millisecond) // a second loop's late resend
	cancel()
	wg.Wait()
	if n, max := sink.count(); n != 7 || max != 1 {
		t.Fatalf("%d events delivered, one of them %d times; want each once", n, max)
	}
}
