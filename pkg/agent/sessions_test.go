package agent

import (
	"context"
	"os"
	"path/filepath"
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
