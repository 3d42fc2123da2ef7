package provisioner

import (
	"context"
	"fmt"

	"github.com/nvmirror/nvmirror/pkg/events"
)

// EventSink receives recorded events for forwarding (events.Forwarder).
type EventSink interface {
	Enqueue(es ...events.Event) error
}

// RecordEvents is the intake for events and audit records reported by
// nodes and controllers: each is validated, stored (queryable, bounded
// retention) and handed to the syslog forwarder when one is configured.
// Events are stored before they are forwarded; if forwarding fails the
// call fails and the reporter retries, so an event may be stored twice but
// never silently lost (at least once, like the forwarder itself).
func (s *Service) RecordEvents(ctx context.Context, es ...events.Event) ([]events.Event, error) {
	for _, e := range es {
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
		}
	}
	out := make([]events.Event, 0, len(es))
	for _, e := range es {
		rec, err := s.o.Store.AppendEvent(ctx, e)
		if err != nil {
			return nil, fmt.Errorf("record event %s: %w", e.Type, err)
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

// ListEvents queries stored events and audit records.
func (s *Service) ListEvents(ctx context.Context, f events.Filter) ([]events.Event, error) {
	return s.o.Store.ListEvents(ctx, f)
}
