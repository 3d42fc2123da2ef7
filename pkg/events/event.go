// Package events defines nvmirror's events and audit records (the table in
// docs/healer.md, section "Events"), their RFC 5424 syslog form, and a
// forwarder that delivers them to a syslog server from a persistent on-disk queue.
package events

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidEvent is wrapped when an event fails validation.
var ErrInvalidEvent = errors.New("invalid event")

// Type is the kind of an event. Its string is also the MSGID sent to syslog,
// so a syslog rule can select on it; keep each within 32 printable ASCII
// characters (RFC 5424 MSGID).
type Type string

// Event types. The first eight are the table in docs/healer.md (section
// "Events"); Audit is a CSI command executed by a controller or node. The
// rest are the provisioner's own (docs/provisioner.md, "Orphans and
// interrupted creates"; docs/snapshots.md).
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
	// CreateRolledBack: a volume left "creating" longer than the
	// provisioner's --creating-timeout (a provisioner killed mid-create)
	// was rolled back: its replicas deleted, its record removed.
	CreateRolledBack Type = "CreateRolledBack"
	// OrphanFound: a storage node holds a replica no volume of the
	// registry owns, seen for the first time by this leader.
	OrphanFound Type = "OrphanFound"
	// OrphanReclaimed: such a replica was deleted from its storage node.
	OrphanReclaimed Type = "OrphanReclaimed"
	// SnapshotTaken, SnapshotDeleted, SnapshotFailed: a snapshot of Volume
	// was cut (its copies complete), deleted, or could not be taken; the
	// message names the snapshot and its storage nodes.
	SnapshotTaken   Type = "SnapshotTaken"
	SnapshotDeleted Type = "SnapshotDeleted"
	SnapshotFailed  Type = "SnapshotFailed"
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
	CreateRolledBack:   {Warning, "Volume Creation Rolled Back"},
	OrphanFound:        {Warning, "Orphan Replica Found"},
	OrphanReclaimed:    {Info, "Orphan Replica Reclaimed"},
	SnapshotTaken:      {Info, "Snapshot Taken"},
	SnapshotDeleted:    {Info, "Snapshot Deleted"},
	SnapshotFailed:     {Warning, "Snapshot Failed"},
}

// Types returns every known event type.
func Types() []Type {
	return []Type{HostDisconnected, HostReconnected, VolumeDegraded, VolumeHealed,
		SynchStarted, SynchEnded, SessionEstablished, SessionClosed, Audit,
		CreateRolledBack, OrphanFound, OrphanReclaimed, SnapshotTaken, SnapshotDeleted, SnapshotFailed}
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

// Limits on an event's fields, checked by Validate when an event is
// recorded (the provisioner's intake refuses more with InvalidArgument).
// Together they keep a formatted syslog message within MaxMessageSize, so
// one event can never be too large to send.
const (
	// MaxFieldLength bounds each name an event carries (volume, replica,
	// node, each storage node and listed replica, method, outcome): 253
	// bytes is the longest Kubernetes object name (a DNS subdomain), and
	// nvmirror's own IDs are far shorter.
	MaxFieldLength = 253
	// MaxListLength bounds the replicas and storage nodes one event lists:
	// a volume has at most 4 replicas (3 and a replacement).
	MaxListLength = 8
	// MaxMessageLength bounds the message text in bytes; reporters cut
	// longer texts (Truncate) before reporting.
	MaxMessageLength = 2048
)

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
	for _, f := range []struct{ name, value string }{{"volume", e.Volume}, {"replica", e.Replica}, {"node", e.Node}, {"method", e.Method}, {"outcome", e.Outcome}} {
		if len(f.value) > MaxFieldLength {
			return fmt.Errorf("%w: %s of %d bytes (at most %d)", ErrInvalidEvent, f.name, len(f.value), MaxFieldLength)
		}
	}
	var storageNodes []string
	if e.StorageNode != "" {
		storageNodes = strings.Split(e.StorageNode, ",")
	}
	for _, l := range []struct {
		name  string
		items []string
	}{{"storage nodes", storageNodes}, {"replicas", e.Replicas}} {
		if len(l.items) > MaxListLength {
			return fmt.Errorf("%w: %d %s (at most %d)", ErrInvalidEvent, len(l.items), l.name, MaxListLength)
		}
		for _, it := range l.items {
			if len(it) > MaxFieldLength {
				return fmt.Errorf("%w: %s: an entry of %d bytes (at most %d)", ErrInvalidEvent, l.name, len(it), MaxFieldLength)
			}
		}
	}
	if len(e.Message) > MaxMessageLength {
		return fmt.Errorf("%w: message of %d bytes (at most %d)", ErrInvalidEvent, len(e.Message), MaxMessageLength)
	}
	return nil
}

// Truncate cuts s to at most n bytes on a UTF-8 boundary, ending it with
// "..." when it was cut: what a reporter does to a message (an error's
// text) before reporting it, to stay within MaxMessageLength.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const more = "..."
	if n <= len(more) {
		return s[:utf8Boundary(s, n)]
	}
	return s[:utf8Boundary(s, n-len(more))] + more
}

// utf8Boundary returns the largest i ≤ n at which s can be cut without
// splitting a UTF-8 sequence.
func utf8Boundary(s string, n int) int {
	if n >= len(s) {
		return len(s)
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}

// EscapeControl returns s with every control character (C0, DEL and C1)
// written as an escape, \xNN (C1: \u00NN), and invalid UTF-8 replaced by
// U+FFFD: the form of event text in syslog and in nvmirrorctl's output,
// where a raw newline would split a log line or forge a table row and an
// escape sequence would drive the reader's terminal. Other characters,
// backslashes included, are kept.
func EscapeControl(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r < 0x80 && unicode.IsControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.IsControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
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
