//go:build linux

package mdraid

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"sync"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// MdstatChange is what Watcher.Wait reports when /proc/mdstat signalled:
// md's global event counter moved (an array started or stopped, a member
// was added, removed or failed, a sync began or ended).
const MdstatChange = "mdstat"

// watchedAttrs are the md attributes the kernel signals with sysfs_notify
// when they change; dev-*/state is added per member.
var watchedAttrs = []string{"array_state", "degraded", "sync_action", "sync_completed"}

// Watcher turns md's change notifications into wake-ups, so that a healer
// notices a failed member or a finished sync at once instead of at its next
// tick. Notifications can be missed (a file created after it was armed, a
// kernel that does not signal some change), so callers keep a periodic timer
// as the backstop and treat a wake-up only as "look now".
//
// Files stay open between calls to Wait: the kernel signals a change that
// happens after the last read of a file, so a change between two Waits is
// still reported by the second one. Wait must not be called concurrently,
// and Close waits for a running Wait to return, so cancel its ctx first.
//
// An array's members are listed again only when it may have gained or lost
// one: when it is first asked for, when one of its files fired, or when
// /proc/mdstat fired (md signals it for every member added, removed or
// failed). A Wait after an unrelated notification so costs nothing per
// quiet array, where listing every array's members again cost tens of
// milliseconds with a thousand arrays, at every step of a resync.
type Watcher struct {
	root string

	mu    sync.Mutex
	files map[string]*watchedFile // by path
	// armed are the arrays whose files are open, with their paths.
	armed map[string][]string
	// rescan are the arrays to list again at the next arm; rescanAll all
	// of them (/proc/mdstat fired).
	rescan    map[string]bool
	rescanAll bool
	// pollFiles and pollFds are what poll waits on (the wake-up pipe
	// last), rebuilt only when the files change (pollStale).
	pollFiles []*watchedFile
	pollFds   []unix.PollFd
	pollStale bool
	wakeR     int // read end of the pipe that interrupts poll
	wakeW     int
	closed    bool
}

// watchedFile is one armed attribute.
type watchedFile struct {
	fd    int
	path  string
	array string // md name, or MdstatChange
}

// NewWatcher returns a Watcher for the system under root ("" or "/" is the
// real one). Nothing is opened until the first Wait.
func NewWatcher(root string) *Watcher {
	if root == "" {
		root = "/"
	}
	return &Watcher{root: root, files: map[string]*watchedFile{}, armed: map[string][]string{}, rescan: map[string]bool{},
		wakeR: -1, wakeW: -1}
}

// Wait blocks until /proc/mdstat or one of the named arrays' watched
// attributes (array_state, degraded, sync_action, sync_completed,
// dev-*/state) signals a change, or ctx is done. It returns the arrays that
// changed, sorted, with MdstatChange for /proc/mdstat.
//
// A file is armed by reading it; files armed by this call (the first call,
// a newly named array, a new member) are not reported, since nothing is
// known about what happened before. An array whose md directory is missing
// is reported at once, so that the caller re-reads it and drops it.
func (w *Watcher) Wait(ctx context.Context, arrays []string) ([]string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	changed, err := w.armLocked(arrays)
	if err != nil || len(changed) > 0 {
		return changed, err
	}
	for len(changed) == 0 {
		if changed, err = w.pollOnce(ctx); err != nil {
			return nil, err
		}
	}
	klog.V(4).InfoS("md change notification", "changed", changed)
	return changed, nil
}

// Arm reads the files of the named arrays (and /proc/mdstat) without
// waiting, so that a change after Arm returns is reported by the next Wait.
// A caller that must not miss a change it is about to cause (a test, or a
// healer acting on an array) arms first. It returns the arrays that are
// gone, like Wait.
func (w *Watcher) Arm(arrays []string) ([]string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.armLocked(arrays)
}

func (w *Watcher) armLocked(arrays []string) ([]string, error) {
	if w.closed {
		return nil, fmt.Errorf("%w: watcher is closed", ErrInvalidArgument)
	}
	for _, a := range arrays {
		if !arrayNamePattern.MatchString(a) {
			return nil, fmt.Errorf("%w: md array name %q is not mdN", ErrInvalidArgument, a)
		}
	}
	if w.wakeR < 0 {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
			return nil, fmt.Errorf("create watcher wake-up pipe: %w", err)
		}
		w.wakeR, w.wakeW = p[0], p[1]
	}
	return w.arm(arrays)
}

// pollOnce polls every armed file once and re-arms those that fired. It
// returns no arrays when poll woke without a change worth reporting.
func (w *Watcher) pollOnce(ctx context.Context) ([]string, error) {
	if w.pollStale || w.pollFds == nil {
		w.pollFiles = w.pollFiles[:0]
		w.pollFds = w.pollFds[:0]
		for _, f := range w.files {
			w.pollFiles = append(w.pollFiles, f)
			w.pollFds = append(w.pollFds, unix.PollFd{Fd: int32(f.fd), Events: unix.POLLPRI | unix.POLLERR})
		}
		w.pollFds = append(w.pollFds, unix.PollFd{Fd: int32(w.wakeR), Events: unix.POLLIN})
		w.pollStale = false
	}
	pollFds := w.pollFds
	for i := range pollFds {
		pollFds[i].Revents = 0
	}
	if err := w.poll(ctx, pollFds); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	owners := make([]string, len(w.pollFiles))
	revents := make([]int16, len(w.pollFiles))
	for i, f := range w.pollFiles {
		owners[i], revents[i] = f.array, pollFds[i].Revents
	}
	changed, fired, err := changedFromRevents(owners, revents)
	if err != nil {
		return nil, err
	}
	for _, i := range fired {
		w.rearm(w.pollFiles[i])
	}
	for _, a := range changed {
		// It may have gained or lost a member: list it again at the
		// next arm (all of them when /proc/mdstat fired).
		if a == MdstatChange {
			w.rescanAll = true
		} else {
			w.rescan[a] = true
		}
	}
	return changed, nil
}

// changedFromRevents decides, from what poll returned for each watched file
// (owners[i] is the array of file i), which arrays changed and which files
// fired and must be re-read to arm them again. md signals a change with
// POLLPRI|POLLERR; sysfs and procfs always report POLLIN, so POLLIN means
// nothing. POLLHUP is taken as a change too; POLLNVAL means a descriptor
// this watcher should own was closed, which is a bug, not a change.
func changedFromRevents(owners []string, revents []int16) (changed []string, fired []int, err error) {
	if len(owners) != len(revents) {
		return nil, nil, fmt.Errorf("%d poll results for %d watched files", len(revents), len(owners))
	}
	seen := map[string]bool{}
	for i, ev := range revents {
		if ev&unix.POLLNVAL != 0 {
			return nil, nil, fmt.Errorf("watched file of %s has an invalid descriptor", owners[i])
		}
		if ev&(unix.POLLPRI|unix.POLLERR|unix.POLLHUP) == 0 {
			continue
		}
		fired = append(fired, i)
		if !seen[owners[i]] {
			seen[owners[i]] = true
			changed = append(changed, owners[i])
		}
	}
	sort.Strings(changed)
	return changed, fired, nil
}

// arm brings the open files in line with what should be watched: closes
// the files of arrays no longer wanted, lists the members of the arrays
// that are new or may have changed (rescan), opens and reads new files. It
// returns arrays that are gone (or whose attributes cannot be read), which
// count as changed.
func (w *Watcher) arm(arrays []string) ([]string, error) {
	var changed, retry []string
	mdstat := filepath.Join(w.root, "proc", "mdstat")
	if _, ok := w.files[mdstat]; !ok {
		// A missing /proc/mdstat means md is not loaded yet.
		if ok, err := w.open(mdstat, MdstatChange); err != nil {
			return nil, err
		} else if !ok {
			changed = append(changed, MdstatChange)
		}
	}
	wanted := make(map[string]bool, len(arrays))
	for _, a := range arrays {
		wanted[a] = true
	}
	for a := range w.armed {
		if !wanted[a] {
			w.disarm(a, nil)
		}
	}
	for _, a := range arrays {
		if _, ok := w.armed[a]; ok && !w.rescanAll && !w.rescan[a] {
			continue
		}
		paths, err := w.paths(a)
		if err != nil {
			return nil, err
		}
		if paths == nil {
			w.disarm(a, nil)
			changed = append(changed, a)
			continue
		}
		w.disarm(a, paths) // members gone
		for _, p := range paths {
			if _, ok := w.files[p]; ok {
				continue
			}
			if ok, err := w.open(p, a); err != nil {
				return nil, err
			} else if !ok {
				changed = append(changed, a)
				retry = append(retry, a)
			}
		}
		w.armed[a] = paths
	}
	w.rescanAll = false
	clear(w.rescan)
	for _, a := range retry {
		w.rescan[a] = true // its unreadable file is tried again next time
	}
	return dedupeSorted(changed), nil
}

// paths lists an array's watched files; nil when its md directory is
// missing.
func (w *Watcher) paths(a string) ([]string, error) {
	mdDir := filepath.Join(w.root, "sys", "block", a, "md")
	if err := unix.Access(mdDir, unix.F_OK); err != nil {
		return nil, nil
	}
	paths := make([]string, 0, len(watchedAttrs)+4)
	for _, attr := range watchedAttrs {
		paths = append(paths, filepath.Join(mdDir, attr))
	}
	members, err := filepath.Glob(filepath.Join(mdDir, "dev-*", "state"))
	if err != nil {
		return nil, fmt.Errorf("list members of %s: %w", a, err)
	}
	return append(paths, members...), nil
}

// disarm closes the files of an array that are not in keep.
func (w *Watcher) disarm(a string, keep []string) {
	for _, p := range w.armed[a] {
		if f, ok := w.files[p]; ok && f.array == a && !slices.Contains(keep, p) {
			w.closeFile(f)
		}
	}
	if keep == nil {
		delete(w.armed, a)
	}
}

// open opens and reads a file to arm it. ok is false when it exists but
// cannot be read; a missing file (levels without redundancy lack degraded
// and sync_*) is skipped.
func (w *Watcher) open(p, owner string) (ok bool, err error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("open %s: %w", p, err)
	}
	if err := drain(fd); err != nil {
		unix.Close(fd)
		klog.V(4).InfoS("Cannot arm md attribute", "path", p, "err", err)
		return false, nil
	}
	w.files[p] = &watchedFile{fd: fd, path: p, array: owner}
	w.pollStale = true
	return true, nil
}

func (w *Watcher) closeFile(f *watchedFile) {
	unix.Close(f.fd)
	delete(w.files, f.path)
	w.pollStale = true
}

// rearm re-reads a file that fired. A file that can no longer be read
// (its array was stopped) is closed; the next Wait decides what it means.
func (w *Watcher) rearm(f *watchedFile) {
	if err := drain(f.fd); err != nil {
		klog.V(4).InfoS("Dropping md attribute that cannot be re-read", "path", f.path, "err", err)
		w.closeFile(f)
	}
}

// drain reads a sysfs or procfs file from the start to EOF: the read is what
// tells the kernel which state the reader has seen, so poll reports only
// changes after it.
func drain(fd int) error {
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
	}
}

// poll waits on the descriptors; the last one is the wake-up pipe, written
// when ctx is done so that cancellation does not wait for a change.
func (w *Watcher) poll(ctx context.Context, fds []unix.PollFd) error {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			_, _ = unix.Write(w.wakeW, []byte{0})
		case <-stop:
		}
	}()
	var err error
	for {
		_, err = unix.Poll(fds, -1)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	close(stop)
	wg.Wait()
	buf := make([]byte, 64)
	for {
		if n, rerr := unix.Read(w.wakeR, buf); rerr != nil || n == 0 {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("poll md attributes: %w", err)
	}
	return nil
}

// Close releases every open file. A closed Watcher cannot Wait again.
func (w *Watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range w.files {
		w.closeFile(f)
	}
	clear(w.armed)
	if w.wakeR >= 0 {
		unix.Close(w.wakeR)
		unix.Close(w.wakeW)
		w.wakeR, w.wakeW = -1, -1
	}
	w.closed = true
	return nil
}

func dedupeSorted(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
