// Package events defines nvmirror's events and audit records (the table in
// docs/healer.md, section "Events"), their RFC 5424 syslog form, and a
// forwarder that delivers them to a syslog server from a persistent on-disk queue.
package events

import (
	"errors"
	"fmt"
	"time"
)

// ErrInvalidEvent is wrapped when an event fails validation.
var ErrInvalidEvent = errors.New("invalid event")

// Type is the kind of an event. Its string is also the MSGID sent to syslog,
// so a syslog rule can select on it; keep each within 32 printable ASCII
// characters (RFC 5424 MSGID).
type Type string

// Event types. The first eight are the table in docs/healer.md (section
// "Events"); Audit is a CSI command executed by a controller or node.
const (
	HostDisconnected   Type = "HostDisconnected"
	HostReconnected    Type = "HostReconnected"
	VolumeDegraded     Type = "VolumeDegraded"
	VolumeHealed       Type = "VolumeHealed"
	SynchStarted       Type = "SynchStarted"
	SynchEnded         Type = "SynchEnded"
	SessionEstablished Type = "SessionEstablished"
	SessionClosed      Type = "SessionClosed"
	Audit              Type = "Audit"
)

// Level is an event's importance in the reference product's terms.
type Level int

const (
	Info Level = iota
	Warning
	Fatal
)

func (l Level) String() string {
	switch l {
	case Info:
		return "Info"
	case Warning:
		return "Warning"
	case Fatal:
		return "Fatal"
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// Severity is the RFC 5424 severity of a level: Fatal → critical (2),
// Warning → warning (4), Info → informational (6).
func (l Level) Severity() int {
	switch l {
	case Fatal:
		return 2
	case Warning:
		return 4
	}
	return 6
}

type typeInfo struct {
	level Level
	title string
}

var types = map[Type]typeInfo{
	HostDisconnected:   {Fatal, "Host Disconnected"},
	HostReconnected:    {Info, "Host Reconnected"},
	VolumeDegraded:     {Fatal, "Replicated Volume Degraded"},
	VolumeHealed:       {Info, "Replicated Volume Healed"},
	SynchStarted:       {Warning, "Replicated Volume Synch Started"},
	SynchEnded:         {Warning, "Replicated Volume Synch Ended"},
	SessionEstablished: {Info, "Session Established"},
	SessionClosed:      {Info, "Session Closed"},
	Audit:              {Info, "CSI Command"},
}

// Types returns every known event type.
func Types() []Type {
	return []Type{HostDisconnected, HostReconnected, VolumeDegraded, VolumeHealed,
		SynchStarted, SynchEnded, SessionEstablished, SessionClosed, Audit}
}

// Known reports whether t is a defined type.
func (t Type) Known() bool { _, ok := types[t]; return ok }

// Level of the type; unknown types are Info.
func (t Type) Level() Level { return types[t].level }

// Title is the reference product's name of the event ("Host Disconnected").
func (t Type) Title() string {
	if i, ok := types[t]; ok {
		return i.title
	}
	return string(t)
}

// MaxIDLength bounds an event ID: IDs are keys in the store's dedupe
// index, and a UUID or a hash needs far less.
const MaxIDLength = 128

// Event is one event or audit record.
type Event struct {
	// Seq is assigned by the store when the event is recorded; 0 before.
	Seq uint64 `json:"seq,omitempty"`
	// ID is chosen by the reporter and unique per event; a store records
	// an ID once, so a reporter whose call timed out can resend. Empty IDs
	// are never deduplicated.
	ID   string    `json:"id,omitempty"`
	Time time.Time `json:"time"`
	Type Type      `json:"type"`
	// Volume, Replica: what the event is about. Node: the compute node that
	// observed it (or ran the CSI command). StorageNode: the storage node
	// involved. Empty when not applicable.
	Volume      string `json:"volume,omitempty"`
	Replica     string `json:"replica,omitempty"`
	Node        string `json:"node,omitempty"`
	StorageNode string `json:"storageNode,omitempty"`
	// Replicas lists every replica concerned when there are several (a
	// Degraded event names every missing replica, not one of them).
	Replicas []string `json:"replicas,omitempty"`
	Message  string   `json:"message,omitempty"`
	// Audit records only: the CSI method and its outcome ("OK" or the gRPC
	// code name).
	Method  string `json:"method,omitempty"`
	Outcome string `json:"outcome,omitempty"`
}

// Validate checks what the intake must refuse: an unknown type, a missing
// time, an audit record without its method.
func (e Event) Validate() error {
	if !e.Type.Known() {
		return fmt.Errorf("%w: unknown type %q", ErrInvalidEvent, e.Type)
	}
	if e.Time.IsZero() {
		return fmt.Errorf("%w: %s without time", ErrInvalidEvent, e.Type)
	}
	if len(e.ID) > MaxIDLength {
		return fmt.Errorf("%w: id of %d bytes (at most %d)", ErrInvalidEvent, len(e.ID), MaxIDLength)
	}
	if e.Type == Audit && e.Method == "" {
		return fmt.Errorf("%w: audit record without method", ErrInvalidEvent)
	}
	return nil
}

// Filter selects events; zero fields match everything.
type Filter struct {
	Volume string
	// Node matches either Node or StorageNode.
	Node  string
	Types []Type
	// Since is inclusive, Until exclusive.
	Since, Until time.Time
	// AfterSeq returns only events recorded after that sequence number
	// (paging and "follow").
	AfterSeq uint64
	// Limit bounds the result (oldest first); 0 means no limit.
	Limit int
}

// Match reports whether e passes the filter (Limit and AfterSeq aside from
// the sequence check).
func (f Filter) Match(e Event) bool {
	if f.AfterSeq != 0 && e.Seq <= f.AfterSeq {
		return false
	}
	if f.Volume != "" && e.Volume != f.Volume {
		return false
	}
	if f.Node != "" && e.Node != f.Node && e.StorageNode != f.Node {
		return false
	}
	if len(f.Types) > 0 {
		ok := false
		for _, t := range f.Types {
			if t == e.Type {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if !f.Since.IsZero() && e.Time.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !e.Time.Before(f.Until) {
		return false
	}
	return true
}
