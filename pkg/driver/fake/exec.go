package fake

import (
	"context"
	"fmt"
	"strings"
	"sync"

	utilexec "k8s.io/utils/exec"
	testingexec "k8s.io/utils/exec/testing"
)

// Exec plays the tools mount-utils runs: blkid (reports the filesystem mkfs
// wrote, exit 2 for blank), mkfs.*, fsck, resize2fs and xfs_growfs.
// Contents are keyed by contentKey(path), so a filesystem written on an md
// device follows the array rather than its device number.
type Exec struct {
	mu         sync.Mutex
	contentKey func(string) string
	fs         map[string]string
	// Calls records every command line run.
	Calls []string
	// Missing names tools LookPath does not find.
	Missing map[string]bool
}

// NewExec returns an exec; contentKey may be nil (paths are keys).
func NewExec(contentKey func(string) string) *Exec {
	if contentKey == nil {
		contentKey = func(p string) string { return p }
	}
	return &Exec{contentKey: contentKey, fs: map[string]string{}, Missing: map[string]bool{}}
}

// SetFS pretends path holds a filesystem (or partition table) of type t.
func (e *Exec) SetFS(path, t string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fs[e.contentKey(path)] = t
}

// FS returns what blkid would report at path.
func (e *Exec) FS(path string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fs[e.contentKey(path)]
}

func (e *Exec) run(cmd string, args []string) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.Calls = append(e.Calls, strings.TrimSpace(cmd+" "+strings.Join(args, " ")))
	last := ""
	if len(args) > 0 {
		last = args[len(args)-1]
	}
	switch {
	case cmd == "blkid":
		t := e.fs[e.contentKey(last)]
		if t == "" {
			return nil, testingexec.FakeExitError{Status: 2}
		}
		return []byte("DEVNAME=" + last + "\nTYPE=" + t + "\n"), nil
	case strings.HasPrefix(cmd, "mkfs."):
		e.fs[e.contentKey(last)] = strings.TrimPrefix(cmd, "mkfs.")
		return nil, nil
	case cmd == "fsck", cmd == "resize2fs", cmd == "xfs_growfs":
		return nil, nil
	}
	return []byte("fake exec: unknown command " + cmd), testingexec.FakeExitError{Status: 127}
}

func (e *Exec) Command(cmd string, args ...string) utilexec.Cmd {
	action := func() ([]byte, []byte, error) {
		out, err := e.run(cmd, args)
		return out, nil, err
	}
	return &testingexec.FakeCmd{
		Argv:                 append([]string{cmd}, args...),
		CombinedOutputScript: []testingexec.FakeAction{action},
		OutputScript:         []testingexec.FakeAction{action},
		RunScript:            []testingexec.FakeAction{action},
	}
}

func (e *Exec) CommandContext(_ context.Context, cmd string, args ...string) utilexec.Cmd {
	return e.Command(cmd, args...)
}

func (e *Exec) LookPath(file string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.Missing[file] {
		return "", fmt.Errorf("%s: %w", file, utilexec.ErrExecutableNotFound)
	}
	return "/usr/sbin/" + file, nil
}

var _ utilexec.Interface = (*Exec)(nil)
