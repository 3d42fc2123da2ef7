package events

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestTypeTable(t *testing.T) {
	// docs/healer.md, section "Events": level per event, and MSGIDs valid for syslog.
	want := map[Type]Level{
		HostDisconnected: Fatal, HostReconnected: Info,
		VolumeDegraded: Fatal, VolumeHealed: Info,
		SynchStarted: Warning, SynchEnded: Warning,
		SessionEstablished: Info, SessionClosed: Info, Audit: Info,
		// docs/provisioner.md, "Orphans and interrupted creates".
		CreateRolledBack: Warning, OrphanFound: Warning, OrphanReclaimed: Info,
		// docs/snapshots.md.
		SnapshotTaken: Info, SnapshotDeleted: Info, SnapshotFailed: Warning,
	}
	if len(Types()) != len(want) {
		t.Fatalf("Types() has %d entries, want %d", len(Types()), len(want))
	}
	for _, typ := range Types() {
		if got := typ.Level(); got != want[typ] {
			t.Errorf("%s level = %v, want %v", typ, got, want[typ])
		}
		if len(typ) > 32 || len(typ) == 0 {
			t.Errorf("%s: MSGID length %d not in 1..32", typ, len(typ))
		}
		for _, c := range []byte(typ) {
			if c < 33 || c > 126 {
				t.Errorf("%s: MSGID has non-printable %q", typ, c)
			}
		}
	}
	if HostDisconnected.Title() != "Host Disconnected" || VolumeDegraded.Title() != "Replicated Volume Degraded" {
		t.Error("titles differ from the reference product's names")
	}
	if Type("Nope").Known() {
		t.Error("unknown type reported known")
	}
}

func TestSeverity(t *testing.T) {
	for l, want := range map[Level]int{Fatal: 2, Warning: 4, Info: 6} {
		if got := l.Severity(); got != want {
			t.Errorf("%v.Severity() = %d, want %d", l, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name string
		e    Event
		ok   bool
	}{
		{"ok", Event{Time: now, Type: VolumeHealed, Volume: "v"}, true},
		{"audit ok", Event{Time: now, Type: Audit, Method: "CreateVolume"}, true},
		{"unknown type", Event{Time: now, Type: "Boom"}, false},
		{"no time", Event{Type: VolumeHealed}, false},
		{"audit without method", Event{Time: now, Type: Audit}, false},
		{"id at the limit", Event{ID: strings.Repeat("x", MaxIDLength), Time: now, Type: VolumeHealed}, true},
		{"id too long", Event{ID: strings.Repeat("x", MaxIDLength+1), Time: now, Type: VolumeHealed}, false},
		{"fields at their limits", Event{Time: now, Type: Audit, Volume: long(MaxFieldLength), Replica: long(MaxFieldLength), Node: long(MaxFieldLength),
			StorageNode: strings.Join(repeat(long(MaxFieldLength), MaxListLength), ","), Replicas: repeat(long(MaxFieldLength), MaxListLength),
			Method: long(MaxFieldLength), Outcome: long(MaxFieldLength), Message: long(MaxMessageLength)}, true},
		{"volume too long", Event{Time: now, Type: VolumeHealed, Volume: long(MaxFieldLength + 1)}, false},
		{"replica too long", Event{Time: now, Type: VolumeHealed, Replica: long(MaxFieldLength + 1)}, false},
		{"node too long", Event{Time: now, Type: VolumeHealed, Node: long(MaxFieldLength + 1)}, false},
		{"storage node too long", Event{Time: now, Type: VolumeHealed, StorageNode: "sn-1," + long(MaxFieldLength+1)}, false},
		{"too many storage nodes", Event{Time: now, Type: VolumeHealed, StorageNode: strings.Join(repeat("sn", MaxListLength+1), ",")}, false},
		{"a listed replica too long", Event{Time: now, Type: VolumeHealed, Replicas: []string{"r", long(MaxFieldLength + 1)}}, false},
		{"too many replicas", Event{Time: now, Type: VolumeHealed, Replicas: repeat("r", MaxListLength+1)}, false},
		{"method too long", Event{Time: now, Type: Audit, Method: long(MaxFieldLength + 1)}, false},
		{"outcome too long", Event{Time: now, Type: Audit, Method: "m", Outcome: long(MaxFieldLength + 1)}, false},
		{"message too long", Event{Time: now, Type: VolumeHealed, Message: long(MaxMessageLength + 1)}, false},
	}
	for _, tc := range tests {
		err := tc.e.Validate()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidEvent)) {
			t.Errorf("%s: Validate = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func long(n int) string { return strings.Repeat("x", n) }

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestFilterMatch(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := Event{Seq: 5, Time: t0, Type: VolumeDegraded, Volume: "v1", Node: "n1", StorageNode: "sn1"}
	tests := []struct {
		name string
		f    Filter
		want bool
	}{
		{"empty", Filter{}, true},
		{"volume", Filter{Volume: "v1"}, true},
		{"other volume", Filter{Volume: "v2"}, false},
		{"node", Filter{Node: "n1"}, true},
		{"storage node via node", Filter{Node: "sn1"}, true},
		{"other node", Filter{Node: "n2"}, false},
		{"type", Filter{Types: []Type{VolumeHealed, VolumeDegraded}}, true},
		{"other type", Filter{Types: []Type{VolumeHealed}}, false},
		{"since inclusive", Filter{Since: t0}, true},
		{"since after", Filter{Since: t0.Add(time.Second)}, false},
		{"until exclusive", Filter{Until: t0}, false},
		{"until after", Filter{Until: t0.Add(time.Second)}, true},
		{"after seq", Filter{AfterSeq: 4}, true},
		{"after own seq", Filter{AfterSeq: 5}, false},
	}
	for _, tc := range tests {
		if got := tc.f.Match(e); got != tc.want {
			t.Errorf("%s: Match = %v, want %v", tc.name, got, tc.want)
		}
	}
}
