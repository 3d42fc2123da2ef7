package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestControllerNamed(t *testing.T) {
	for _, tc := range []struct {
		msg, want string
	}{
		{"nvme nvme3: starting error recovery", "nvme3"},
		{"nvme nvme12: Reconnecting in 2 seconds...", "nvme12"},
		{`nvme nvme0: Removing ctrl: NQN "nqn.2026-01.io.nvmirror:r1"`, "nvme0"},
		{"nvme nvme3n1: I/O Cmd(0x2) @ LBA 0", ""}, // a namespace, not a controller
		{"nvme_fabrics: failed to connect", ""},
		{"nvme nvme: oops", ""},
		{"nvme nvme7", ""},
		{"md/raid1:md127: Disk failure on nvme2n1", ""},
	} {
		got, ok := ControllerNamed(tc.msg)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("ControllerNamed(%q) = %q, %v; want %q", tc.msg, got, ok, tc.want)
		}
	}
}

// The log is followed from a pipe standing in for /dev/kmsg: Wait blocks
// until records naming controllers arrive and returns each name once,
// ignores other records, ends with its context, and reports the end of
// the log.
func TestControllerLogWait(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	l, err := OpenControllerLog(fmt.Sprintf("/proc/self/fd/%d", r.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		names []string
		lost  bool
		err   error
	}
	wait := func(ctx context.Context) chan result {
		ch := make(chan result, 1)
		go func() { n, lost, err := l.Wait(ctx); ch <- result{n, lost, err} }()
		return ch
	}
	ch := wait(context.Background())
	write := func(s string) {
		if _, err := w.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	write("6,100,5000,-;md: md127 stopped.\n")
	select {
	case got := <-ch:
		t.Fatalf("Wait returned on a record naming no controller: %+v", got)
	case <-time.After(100 * time.Millisecond):
	}
	write("4,101,5001,-;nvme nvme3: starting error recovery\n SUBSYSTEM=nvme\n DEVICE=c238:3\n" +
		"6,102,5002,-;nvme nvme3: Reconnecting in 2 seconds...\n6,103,5003,-;nvme nvme5: Removing controller...\n")
	select {
	case got := <-ch:
		if got.err != nil || got.lost || !slices.Equal(got.names, []string{"nvme3", "nvme5"}) {
			t.Fatalf("Wait = %+v, want nvme3 and nvme5", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after records naming controllers")
	}

	ctx, cancel := context.WithCancel(context.Background())
	ch = wait(ctx)
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case got := <-ch:
		if !errors.Is(got.err, context.Canceled) {
			t.Fatalf("Wait after cancel = %+v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return when its context ended")
	}

	w.Close()
	if _, _, err := l.Wait(context.Background()); !errors.Is(err, io.EOF) {
		t.Fatalf("Wait on an ended log = %v, want EOF", err)
	}
}

func TestOpenControllerLogMissing(t *testing.T) {
	if _, err := OpenControllerLog(t.TempDir() + "/kmsg"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("OpenControllerLog of a missing file = %v", err)
	}
}
