package healer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// EventReporter is the provisioner's ReportEvents;
// *provisionerclient.Client satisfies it (it maps the comma-separated
// StorageNode to storage_nodes). Every event carries its ID (EventID), which
// makes the call idempotent.
type EventReporter interface {
	ReportEvents(ctx context.Context, es ...events.Event) error
}

// ErrRejected marks a batch the provisioner will never accept; so does
// volume.ErrInvalidArgument (the client's mapping of InvalidArgument). The
// events of such a batch are then sent one by one and those refused alone
// are dropped, so that one bad event can neither block the queue forever
// nor take good events with it.
var ErrRejected = errors.New("events rejected")

// EventQueue is the node's outbox of events: Enqueue returns once the
// events are fsynced in a local file, and Run delivers them to the
// provisioner in order, removing them only when ReportEvents succeeded. A
// provisioner outage delays events; it loses none, and a restart resends
// what was not acknowledged (at least once; the IDs make it exactly once
// at the provisioner).
type EventQueue struct {
	q     *events.Queue
	sink  EventReporter
	clock clock.Clock
	wake  chan struct{}
	// Batch is how many events one ReportEvents carries.
	Batch int
	// MinBackoff and MaxBackoff bound the wait between failed deliveries.
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout bounds one ReportEvents.
	CallTimeout time.Duration

	running atomic.Bool // a Run loop is sending
}

// OpenEventQueue opens (creating) the queue file. limit bounds its length
// (events.DefaultQueueLimit when ≤ 0; the oldest are dropped beyond it).
func OpenEventQueue(path string, limit int, sink EventReporter, clk clock.Clock) (*EventQueue, error) {
	q, err := events.OpenQueue(path, limit)
	if err != nil {
		return nil, err
	}
	// MaxBackoff 30 s: the events waiting are what an operator watches
	// (VolumeDegraded above all), and a provisioner back from a restart
	// should have them within half a minute, not five (seen on a loaded
	// test node: the claim's VolumeDegraded a minute late); one small call
	// per node every 30 s while it is away costs nothing.
	return &EventQueue{q: q, sink: sink, clock: clk, wake: make(chan struct{}, 1), Batch: 100,
		MinBackoff: time.Second, MaxBackoff: 30 * time.Second, CallTimeout: 30 * time.Second}, nil
}

// Close closes the file.
func (e *EventQueue) Close() error { return e.q.Close() }

// Enqueue logs and persists events, then wakes the sender.
func (e *EventQueue) Enqueue(evs []events.Event) error {
	if len(evs) == 0 {
		return nil
	}
	msgs := make([][]byte, 0, len(evs))
	for _, ev := range evs {
		if ev.ID == "" {
			ev.ID = EventID(ev)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		msgs = append(msgs, b)
		kv := []any{"id", ev.ID, "type", ev.Type, "level", ev.Type.Level(), "time", ev.Time, "volumeID", ev.Volume,
			"replicas", ev.Replicas, "storageNode", ev.StorageNode, "node", ev.Node}
		if ev.Type == events.Audit {
			kv = append(kv, "method", ev.Method, "outcome", ev.Outcome)
		}
		msg := ev.Message
		if msg == "" {
			msg = ev.Type.Title()
		}
		if ev.Type.Level() == events.Info {
			klog.InfoS(msg, kv...)
		} else {
			klog.InfoS(msg, append(kv, "severity", ev.Type.Level().String())...)
		}
	}
	if _, err := e.q.Push(msgs...); err != nil {
		return err
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return nil
}

// Len is the number of undelivered events.
func (e *EventQueue) Len() int {
	s, err := e.q.Stats()
	if err != nil {
		return 0
	}
	return s.Len
}

// Flush delivers queued events until the queue is empty or a delivery
// fails; it returns that failure.
func (e *EventQueue) Flush(ctx context.Context) error {
	for {
		items, err := e.q.Read(0, e.Batch)
		if err != nil {
			return err
		}
		if len(items) == 0 {
			return nil
		}
		reports := make([]events.Event, 0, len(items))
		for _, it := range items {
			var r events.Event
			if err := json.Unmarshal(it.Data, &r); err != nil {
				klog.ErrorS(err, "Dropping an unreadable queued event", "seq", it.Seq)
				continue
			}
			reports = append(reports, r)
		}
		err = e.report(ctx, reports)
		if rejected(err) && len(reports) > 1 {
			// One refused event must not take the rest of its batch with
			// it: send them one by one and set aside only what is refused.
			for _, r := range reports {
				if err = e.report(ctx, []events.Event{r}); rejected(err) {
					klog.ErrorS(err, "Provisioner rejected an event; dropping it", "id", r.ID, "type", r.Type, "volumeID", r.Volume)
				} else if err != nil {
					return fmt.Errorf("report event %s: %w", r.ID, err)
				}
			}
		} else if rejected(err) {
			klog.ErrorS(err, "Provisioner rejected an event; dropping it", "id", reports[0].ID, "type", reports[0].Type, "volumeID", reports[0].Volume)
		} else if err != nil {
			return fmt.Errorf("report %d events: %w", len(reports), err)
		}
		if err := e.q.Ack(items[len(items)-1].Seq); err != nil {
			return err
		}
	}
}

// report sends one ReportEvents within CallTimeout.
func (e *EventQueue) report(ctx context.Context, reports []events.Event) error {
	if len(reports) == 0 {
		return nil
	}
	if e.CallTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.CallTimeout)
		defer cancel()
	}
	return e.sink.ReportEvents(ctx, reports...)
}

// rejected: the provisioner will never accept these events.
func rejected(err error) bool {
	return errors.Is(err, ErrRejected) || errors.Is(err, volume.ErrInvalidArgument)
}

// Run delivers events until ctx ends: at once when some are enqueued, and
// after a failure again with exponential backoff. One loop sends: a Run
// called while another runs returns at once (logged), since two loops would
// read and send the same events, and every event would reach syslog twice.
func (e *EventQueue) Run(ctx context.Context) {
	if !e.running.CompareAndSwap(false, true) {
		klog.ErrorS(nil, "Event queue sender already running; not starting a second one")
		return
	}
	defer e.running.Store(false)
	wait := time.Duration(0)
	for {
		if err := e.Flush(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = min(max(2*wait, e.MinBackoff), e.MaxBackoff)
			klog.InfoS("Event delivery failed; retrying", "queued", e.Len(), "retryIn", wait, "err", err)
			t := e.clock.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C():
			}
			continue
		}
		wait = 0
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		}
	}
}
