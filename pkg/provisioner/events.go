package provisioner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// EventSink receives recorded events for forwarding (events.Forwarder).
type EventSink interface {
	Enqueue(es ...events.Event) error
}

// FanOut returns a sink handing events to each of sinks in order (nil ones
// skipped; nil when none is left). The first error stops it and is
// returned: the reporter resends, and each sink takes a resend (syslog
// may see a duplicate, the Kubernetes sink records it once).
func FanOut(sinks ...EventSink) EventSink {
	var fo fanOut
	for _, s := range sinks {
		if s != nil {
			fo = append(fo, s)
		}
	}
	switch len(fo) {
	case 0:
		return nil
	case 1:
		return fo[0]
	}
	return fo
}

type fanOut []EventSink

func (fo fanOut) Enqueue(es ...events.Event) error {
	for _, s := range fo {
		if err := s.Enqueue(es...); err != nil {
			return err
		}
	}
	return nil
}

// RecordEvents is the intake for events and audit records reported by
// nodes and controllers: each is validated, stored (queryable, bounded
// retention) and handed to the syslog forwarder when one is configured.
// Events are stored before they are forwarded; if forwarding fails the
// call fails and the reporter retries. An event whose ID is already stored
// is not stored again (a resend) but is forwarded again, because its first
// forwarding may be what failed: syslog may see a duplicate, never a gap.
//
// A newly stored VolumeDegraded sets the volume's DegradedSince (when
// unset) and a VolumeHealed clears it, so "degraded since" survives node
// restarts and pod moves. Only new events do so: a resent Degraded arriving
// after the Healed must not mark a whole volume degraded again.
func (s *Service) RecordEvents(ctx context.Context, es ...events.Event) ([]events.Event, error) {
	for _, e := range es {
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
		}
	}
	out := make([]events.Event, 0, len(es))
	for _, e := range es {
		rec, added, err := s.o.Store.AppendEvent(ctx, e)
		if err != nil {
			return nil, fmt.Errorf("record event %s: %w", e.Type, err)
		}
		if added {
			if err := s.trackDegraded(ctx, rec); err != nil {
				return nil, err
			}
		}
		out = append(out, rec)
	}
	if s.o.Events != nil {
		if err := s.o.Events.Enqueue(out...); err != nil {
			return nil, fmt.Errorf("queue events for syslog: %w", err)
		}
	}
	return out, nil
}

// trackDegraded applies a Degraded or Healed event to its volume's
// DegradedSince. Events for volumes the registry does not know (deleted
// meanwhile) are stored but change nothing.
func (s *Service) trackDegraded(ctx context.Context, e events.Event) error {
	if e.Volume == "" || (e.Type != events.VolumeDegraded && e.Type != events.VolumeHealed) {
		return nil
	}
	_, err := s.o.Store.UpdateVolume(ctx, e.Volume, func(v *store.Volume) error {
		switch {
		case e.Type == events.VolumeDegraded && v.DegradedSince.IsZero():
			v.DegradedSince = e.Time
		// A Healed older than the current degradation belongs to an
		// earlier one (events can arrive out of order from a node's
		// queue): it must not clear the newer state.
		case e.Type == events.VolumeHealed && !v.DegradedSince.IsZero() && !e.Time.Before(v.DegradedSince):
			v.DegradedSince = time.Time{}
		}
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("record %s of volume %s: %w", e.Type, e.Volume, err)
	}
	return nil
}

// ListEvents queries stored events and audit records.
func (s *Service) ListEvents(ctx context.Context, f events.Filter) ([]events.Event, error) {
	return s.o.Store.ListEvents(ctx, f)
}
