package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseKmsgRecord(t *testing.T) {
	const s, h = "nqn.2026-11.io.nvmirror:replica:r1", "nqn.2014-08.org.nvmexpress:uuid:6b1d8e3c-0000-4000-8000-000000000021"
	for _, tc := range []struct {
		rec  string
		want SessionEvent
		ok   bool
	}{
		{"6,1234,5678901,-;nvmet: creating nvm controller 1 for subsystem " + s + " for NQN " + h + ".\n", SessionEvent{SessionEstablished, s, h, 1}, true},
		{"6,1,2,-;nvmet: creating nvm controller 17 for subsystem " + s + " for NQN " + h + " with DH-HMAC-CHAP.\n SUBSYSTEM=x\n", SessionEvent{SessionEstablished, s, h, 17}, true},
		{"nvmet: creating nvm controller 2 for subsystem " + s + " for NQN " + h + " T10-PI is enabled.", SessionEvent{SessionEstablished, s, h, 2}, true},
		{"4,99,100,-;nvmet: connect by host " + h + " for subsystem " + s + " not allowed\n", SessionEvent{Kind: SessionRefused, SubsysNQN: s, HostNQN: h}, true},
		// A host NQN may hold spaces (the NQN grammar allows any UTF-8): a
		// refused connect is exactly what an odd host sends.
		{"4,99,100,-;nvmet: connect by host " + "nqn.evil host" + " for subsystem " + s + " not allowed\n", SessionEvent{Kind: SessionRefused, SubsysNQN: s, HostNQN: "nqn.evil host"}, true},
		{"4,99,100,-;nvmet: connect by host " + "a for subsystem b" + " for subsystem " + s + " not allowed\n", SessionEvent{Kind: SessionRefused, SubsysNQN: s, HostNQN: "a for subsystem b"}, true},
		{"4,99,100,-;nvmet: connect by host " + " lead and trail " + " for subsystem " + s + " not allowed\n", SessionEvent{Kind: SessionRefused, SubsysNQN: s, HostNQN: " lead and trail "}, true},
		{"6,1,2,-;nvmet: creating nvm controller 3 for subsystem " + s + " for NQN " + "nqn.a host" + " with DH-HMAC-CHAP.\n", SessionEvent{SessionEstablished, s, "nqn.a host", 3}, true},
		{"6,1,2,-;nvmet: creating nvm controller 4 for subsystem " + s + " for NQN " + "nqn.a host." + " T10-PI is enabled.\n", SessionEvent{SessionEstablished, s, "nqn.a host.", 4}, true},
		// Not session events.
		{"6,1,2,-;nvmet: creating discovery controller 1 for subsystem nqn.2014-08.org.nvmexpress.discovery for NQN " + h + ".\n", SessionEvent{}, false},
		{"6,1,2,-;nvmet: adding nsid 1 to subsystem " + s + "\n", SessionEvent{}, false},
		{"6,1,2,-;nvme nvme0: Connect for subsystem " + s + " is not allowed, hostnqn: " + h + "\n", SessionEvent{}, false},
		{"6,1,2,-;nvmet: creating nvm controller x for subsystem " + s + " for NQN " + h + ".\n", SessionEvent{}, false},
		{"6,1,2,-;nvmet: connect by host " + h + " for subsystem " + s + "\n", SessionEvent{}, false},
		{"", SessionEvent{}, false},
	} {
		got, ok := ParseKmsgRecord(tc.rec)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseKmsgRecord(%q) = %+v, %v; want %+v, %v", tc.rec, got, ok, tc.want, tc.ok)
		}
	}
}

// The watcher follows a file standing in for /dev/kmsg: it skips what was
// there before it started, filters by prefix and stops with its context.
func TestSessionWatcherFollows(t *testing.T) {
	p := filepath.Join(t.TempDir(), "kmsg")
	old := "6,1,1,-;nvmet: connect by host nqn.h:old for subsystem nqn.p:r0 not allowed\n"
	if err := os.WriteFile(p, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []SessionEvent
	w := &SessionWatcher{Path: p, Prefix: "nqn.p:", Sink: func(ev SessionEvent) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, ev)
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	time.Sleep(100 * time.Millisecond) // let it seek to the end first
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range []string{
		"6,2,2,-;nvmet: creating nvm controller 3 for subsystem nqn.other:x for NQN nqn.h:a.\n",
		"6,3,3,-;nvmet: creating nvm controller 4 for subsystem nqn.p:r1 for NQN nqn.h:a.\n SUBSYSTEM=nvmet\n",
		"4,4,4,-;nvmet: connect by host nqn.h:b for subsystem nqn.p:r1 not allowed\n",
	} {
		f.WriteString(rec)
		time.Sleep(50 * time.Millisecond)
	}
	f.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watcher did not stop with its context")
	}
	mu.Lock()
	defer mu.Unlock()
	want := []SessionEvent{{SessionEstablished, "nqn.p:r1", "nqn.h:a", 4}, {Kind: SessionRefused, SubsysNQN: "nqn.p:r1", HostNQN: "nqn.h:b"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("events %+v, want %+v", got, want)
	}
}

func TestSessionWatcherMissingLog(t *testing.T) {
	w := &SessionWatcher{Path: filepath.Join(t.TempDir(), "none"), Sink: func(SessionEvent) {}}
	if err := w.Run(context.Background()); err == nil {
		t.Fatal("missing kernel log: no error")
	}
}

// FuzzParseKmsgRecord: whatever the host NQN (the kernel prints it as the
// host sent it; /dev/kmsg escapes only unprintable bytes), both session
// lines of one of our subsystems parse back to that host.
func FuzzParseKmsgRecord(f *testing.F) {
	f.Add("nqn.2014-08.org.nvmexpress:uuid:6b1d8e3c", 1)
	f.Add("nqn.evil host for subsystem x not allowed", 7)
	f.Add(" with DH-HMAC-CHAP.", 2)
	f.Fuzz(func(t *testing.T, host string, id int) {
		if host == "" || strings.ContainsAny(host, "\n\x00") || id < 0 {
			return
		}
		const sub = "nqn.2026-11.io.nvmirror:replica:r1"
		ev, ok := ParseKmsgRecord("4,1,2,-;nvmet: connect by host " + host + " for subsystem " + sub + " not allowed\n")
		if !ok || ev != (SessionEvent{Kind: SessionRefused, SubsysNQN: sub, HostNQN: host}) {
			t.Fatalf("refused connect of %q: %+v, %v", host, ev, ok)
		}
		for _, tail := range []string{".", " with DH-HMAC-CHAP.", " T10-PI is enabled.", " T10-PI is enabled with DH-HMAC-CHAP."} {
			rec := fmt.Sprintf("6,1,2,-;nvmet: creating nvm controller %d for subsystem %s for NQN %s%s\n", id, sub, host, tail)
			ev, ok := ParseKmsgRecord(rec)
			if !ok || ev.SubsysNQN != sub || ev.ControllerID != id {
				t.Fatalf("%q: %+v, %v", rec, ev, ok)
			}
			// A host NQN ending in one of the suffixes is ambiguous; any
			// other parses back exactly.
			if !strings.HasSuffix(host, ".") && !strings.HasSuffix(host, " with DH-HMAC-CHAP") && !strings.HasSuffix(host, " T10-PI is enabled") && ev.HostNQN != host {
				t.Fatalf("%q: host %q, want %q", rec, ev.HostNQN, host)
			}
		}
	})
}
