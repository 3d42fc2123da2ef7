//go:build linux

package mdraid

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestChangedFromRevents(t *testing.T) {
	const (
		in   = unix.POLLIN | unix.POLLOUT
		prio = unix.POLLPRI | unix.POLLERR
	)
	tests := []struct {
		name        string
		owners      []string
		revents     []int16
		wantChanged []string
		wantFired   []int
		wantErr     bool
	}{
		{name: "nothing", owners: []string{"mdstat", "md127"}, revents: []int16{0, 0}},
		{name: "readable is not a change", owners: []string{"mdstat", "md127"}, revents: []int16{in, in}},
		{name: "sysfs_notify", owners: []string{"mdstat", "md127", "md127"}, revents: []int16{in, in, in | prio},
			wantChanged: []string{"md127"}, wantFired: []int{2}},
		{name: "POLLPRI alone", owners: []string{"md127"}, revents: []int16{unix.POLLPRI}, wantChanged: []string{"md127"}, wantFired: []int{0}},
		{name: "POLLERR alone", owners: []string{"md127"}, revents: []int16{unix.POLLERR}, wantChanged: []string{"md127"}, wantFired: []int{0}},
		{name: "hang-up counts", owners: []string{"md127"}, revents: []int16{unix.POLLHUP}, wantChanged: []string{"md127"}, wantFired: []int{0}},
		{name: "several files of one array report it once, sorted with others",
			owners:  []string{"md9", "md127", "md127", "mdstat"},
			revents: []int16{prio, prio, prio, prio}, wantChanged: []string{"md127", "md9", "mdstat"}, wantFired: []int{0, 1, 2, 3}},
		{name: "invalid descriptor", owners: []string{"md127"}, revents: []int16{unix.POLLNVAL}, wantErr: true},
		{name: "length mismatch", owners: []string{"md127"}, revents: []int16{0, 0}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			changed, fired, err := changedFromRevents(tt.owners, tt.revents)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %v %v, want an error", changed, fired)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(changed, tt.wantChanged) || !reflect.DeepEqual(fired, tt.wantFired) {
				t.Fatalf("got %v %v %v; want %v %v", changed, fired, err, tt.wantChanged, tt.wantFired)
			}
		})
	}
}

// watchRoot is a tree with /proc/mdstat and one array. Regular files never
// signal POLLPRI, so Wait on it can only end by ctx or a missing array.
func watchRoot(t *testing.T) string {
	t.Helper()
	root := sysRoot(t)
	installSysfs(t, root, "raid1-clean", "")
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "proc", "mdstat"), readFixture(t, "mdstat/raid1-clean-bitmap.txt"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestWatcherArmsWithoutReporting(t *testing.T) {
	w := NewWatcher(watchRoot(t))
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	changed, err := w.Wait(ctx, []string{"md127"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, %v; want the deadline", changed, err)
	}
	// mdstat plus array_state, degraded, sync_action, sync_completed and
	// three members' state.
	if len(w.files) != 8 {
		t.Errorf("armed %d files, want 8: %v", len(w.files), w.files)
	}
}

func TestWatcherReportsMissingArrayAtOnce(t *testing.T) {
	w := NewWatcher(watchRoot(t))
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	changed, err := w.Wait(ctx, []string{"md127", "md5", "md3"})
	if err != nil || !reflect.DeepEqual(changed, []string{"md3", "md5"}) {
		t.Fatalf("got %v, %v; want [md3 md5]", changed, err)
	}
}

func TestWatcherCancel(t *testing.T) {
	w := NewWatcher(watchRoot(t))
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	start := time.Now()
	if _, err := w.Wait(ctx, []string{"md127"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("cancellation took %v", elapsed)
	}
	// The wake-up byte was drained: the next Wait blocks until its own ctx.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel2()
	if _, err := w.Wait(ctx2, []string{"md127"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Wait: err = %v, want the deadline", err)
	}
}

func TestWatcherFollowsTheArraysAsked(t *testing.T) {
	root := watchRoot(t)
	installSysfs(t, root, "raid0", "")
	w := NewWatcher(root)
	defer w.Close()
	wait := func(arrays ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if _, err := w.Wait(ctx, arrays); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait(%v): %v", arrays, err)
		}
	}
	wait("md127", "md125")
	// raid0 has array_state and two members' state only.
	if len(w.files) != 8+3 {
		t.Fatalf("armed %d files, want 11", len(w.files))
	}
	wait("md125")
	if len(w.files) != 1+3 {
		t.Fatalf("after dropping md127, %d files stay armed, want 4", len(w.files))
	}
	for p := range w.files {
		if filepath.Base(filepath.Dir(filepath.Dir(p))) == "md127" {
			t.Errorf("%s still armed", p)
		}
	}
}

func TestWatcherWithoutMd(t *testing.T) {
	w := NewWatcher(t.TempDir())
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := w.Wait(ctx, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the deadline", err)
	}
}

func TestWatcherRefusals(t *testing.T) {
	w := NewWatcher(watchRoot(t))
	if _, err := w.Wait(context.Background(), []string{"../md127"}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("bad name: err = %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Wait(context.Background(), []string{"md127"}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("after Close: err = %v", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestWatcherArmThenWait(t *testing.T) {
	w := NewWatcher(watchRoot(t))
	defer w.Close()
	gone, err := w.Arm([]string{"md127", "md9"})
	if err != nil || !reflect.DeepEqual(gone, []string{"md9"}) {
		t.Fatalf("Arm = %v, %v; want [md9] gone", gone, err)
	}
	if len(w.files) != 8 {
		t.Errorf("Arm opened %d files, want 8", len(w.files))
	}
	// Waiting on what Arm already armed opens nothing new and reports
	// nothing until a change (none comes on a plain tree).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if changed, err := w.Wait(ctx, []string{"md127"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait after Arm = %v, %v; want the deadline", changed, err)
	}
	if _, err := w.Arm([]string{"../md1"}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Arm of a bad name: err = %v, want ErrInvalidArgument", err)
	}
}

// TestWatcherListsMembersOnlyWhenTheyMayChange: a quiet array's members are
// not listed again at every Wait; they are once the array or /proc/mdstat
// fired (pollOnce marks it), so a member added or removed is followed.
func TestWatcherListsMembersOnlyWhenTheyMayChange(t *testing.T) {
	root := watchRoot(t)
	w := NewWatcher(root)
	defer w.Close()
	arm := func(want int) {
		t.Helper()
		if gone, err := w.Arm([]string{"md127"}); err != nil || len(gone) != 0 {
			t.Fatalf("Arm = %v, %v", gone, err)
		}
		if len(w.files) != want {
			t.Fatalf("%d files armed, want %d", len(w.files), want)
		}
	}
	arm(8)
	writeSysFile(t, root, "block/md127/md/dev-nvme9n1/state", "spare")
	arm(8) // nothing fired: not listed again
	w.rescan["md127"] = true
	arm(9)
	if err := os.RemoveAll(filepath.Join(root, "sys/block/md127/md/dev-nvme9n1")); err != nil {
		t.Fatal(err)
	}
	w.rescanAll = true
	arm(8)

	// A file that fires marks its array: a pipe whose writer is gone
	// polls as POLLHUP, which counts as a change.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[1])
	w.files["pipe"] = &watchedFile{fd: p[0], path: "pipe", array: "md127"}
	w.pollStale = true
	changed, err := w.pollOnce(context.Background())
	if err != nil || !reflect.DeepEqual(changed, []string{"md127"}) || !w.rescan["md127"] {
		t.Fatalf("pollOnce = %v, %v; rescan %v", changed, err, w.rescan)
	}
	if _, ok := w.files["pipe"]; ok {
		t.Fatal("a file that cannot be re-read stays armed")
	}
	arm(8)
	if len(w.rescan) != 0 {
		t.Fatalf("rescan %v after arming", w.rescan)
	}
}
