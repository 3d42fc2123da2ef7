package mdraid

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// suspendTree installs a captured clean RAID1 as md127 with the block
// device's size (sectors), and returns a function reading md/suspend_lo
// and md/suspend_hi. Before each call that writes them the test empties
// them: sysfs replaces an attribute's value on a write, a regular file
// keeps the old tail.
func suspendTree(t *testing.T, sectors string) (root string, read func() (lo, hi string), reset func()) {
	t.Helper()
	root = sysRoot(t)
	installSysfs(t, root, "raid1-clean", "")
	if sectors != "" {
		writeSysFile(t, root, "block/md127/size", sectors)
	}
	dir := filepath.Join(root, "sys/block/md127/md")
	read = func() (string, string) {
		lo, err := os.ReadFile(filepath.Join(dir, "suspend_lo"))
		if err != nil {
			t.Fatal(err)
		}
		hi, err := os.ReadFile(filepath.Join(dir, "suspend_hi"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(lo)), strings.TrimSpace(string(hi))
	}
	reset = func() {
		for _, a := range []string{"suspend_lo", "suspend_hi"} {
			if err := os.Truncate(filepath.Join(dir, a), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root, read, reset
}

func TestSuspendAndResumeWrites(t *testing.T) {
	root, read, reset := suspendTree(t, "79872")
	m := NewManager(nil, root)

	if held, err := m.WritesSuspended("md127"); err != nil || held {
		t.Fatalf("captured array: held %v, %v; want nothing held", held, err)
	}
	for i := range 2 { // idempotent: a second suspend keeps the range
		reset()
		if err := m.SuspendWrites("md127"); err != nil {
			t.Fatalf("suspend #%d: %v", i+1, err)
		}
		if lo, hi := read(); lo != "0" || hi != "79872" {
			t.Fatalf("suspend #%d wrote lo %q hi %q, want the whole array [0, 79872)", i+1, lo, hi)
		}
		if held, err := m.WritesSuspended("md127"); err != nil || !held {
			t.Fatalf("after suspend #%d: held %v, %v", i+1, held, err)
		}
	}
	for i := range 2 {
		reset()
		if err := m.ResumeWrites("md127"); err != nil {
			t.Fatalf("resume #%d: %v", i+1, err)
		}
		if lo, hi := read(); lo != "0" || hi != "0" {
			t.Fatalf("resume #%d left lo %q hi %q, want the empty range", i+1, lo, hi)
		}
		if held, err := m.WritesSuspended("md127"); err != nil || held {
			t.Fatalf("after resume #%d: held %v, %v", i+1, held, err)
		}
	}
}

// A range someone else set (lo above 0) counts as held, and suspending
// widens it to the whole array.
func TestSuspendWidensAPartialRange(t *testing.T) {
	root, read, reset := suspendTree(t, "1024")
	m := NewManager(nil, root)
	reset()
	writeSysFile(t, root, "block/md127/md/suspend_lo", "100")
	writeSysFile(t, root, "block/md127/md/suspend_hi", "200")
	if held, err := m.WritesSuspended("md127"); err != nil || !held {
		t.Fatalf("[100, 200): held %v, %v", held, err)
	}
	reset()
	if err := m.SuspendWrites("md127"); err != nil {
		t.Fatal(err)
	}
	if lo, hi := read(); lo != "0" || hi != "1024" {
		t.Fatalf("lo %q hi %q, want [0, 1024)", lo, hi)
	}
}

func TestSuspendWritesRefusals(t *testing.T) {
	root, _, _ := suspendTree(t, "0")
	m := NewManager(nil, root)
	if err := m.SuspendWrites("md127"); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "size 0") {
		t.Errorf("array of size 0: %v, want ErrInvalidArgument naming the size", err)
	}
	for _, name := range []string{"../md127", "sda", ""} {
		if err := m.SuspendWrites(name); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("SuspendWrites(%q): %v, want ErrInvalidArgument", name, err)
		}
		if err := m.ResumeWrites(name); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ResumeWrites(%q): %v, want ErrInvalidArgument", name, err)
		}
		if _, err := m.WritesSuspended(name); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("WritesSuspended(%q): %v, want ErrInvalidArgument", name, err)
		}
	}
	// An array that is not there (stopped meanwhile) is ErrNotFound, for
	// every call.
	if err := m.SuspendWrites("md5"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing array: suspend %v, want ErrNotFound", err)
	}
	if err := m.ResumeWrites("md5"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing array: resume %v, want ErrNotFound", err)
	}
	if _, err := m.WritesSuspended("md5"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing array: WritesSuspended %v, want ErrNotFound", err)
	}
}

// The kernel refusing the store (EINVAL from an array without a
// personality) is the caller's error, naming the attribute.
func TestSuspendWritesKernelRefusal(t *testing.T) {
	root, _, _ := suspendTree(t, "2048")
	// A directory where the attribute should be: the open for writing
	// fails the way a refused store does, with the kernel's errno.
	p := filepath.Join(root, "sys/block/md127/md/suspend_hi")
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	err := NewManager(nil, root).SuspendWrites("md127")
	if err == nil || !strings.Contains(err.Error(), "md/suspend_hi") || !strings.Contains(err.Error(), "md127") {
		t.Fatalf("refused store: %v, want an error naming md127 and suspend_hi", err)
	}
}
