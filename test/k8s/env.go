package k8s

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Env owns the processes of one test: each writes its log to a file in
// LogDir, and when the test fails the tail of every log is printed, so a
// failure says what each component was doing.
type Env struct {
	t      testing.TB
	Dir    string // scratch space, removed after the test
	LogDir string

	mu        sync.Mutex
	procs     []*Process
	logChecks []*logCheck
}

// logCheck watches a process's log for a line that means failure.
type logCheck struct {
	p               *Process
	substr, meaning string
	offset          int64
	partial         string // an unfinished last line, completed by the next read
}

// logTailLines is how much of each log a failed test prints.
const logTailLines = 60

// NewEnv makes the directories and registers the log dump. Register it
// before starting anything: cleanups run last-in first-out, so the dump runs
// after every process has stopped and finished writing.
func NewEnv(t testing.TB) *Env {
	t.Helper()
	e := &Env{t: t, Dir: t.TempDir()}
	e.LogDir = filepath.Join(e.Dir, "logs")
	if d := os.Getenv(EnvLogDir); d != "" {
		e.LogDir = filepath.Join(d, strings.ReplaceAll(t.Name(), "/", "_"))
		_ = os.RemoveAll(e.LogDir)
	}
	if err := os.MkdirAll(e.LogDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, p := range e.procs {
			t.Logf("--- %s: last %d lines of %s ---\n%s", p.Name, logTailLines, p.LogPath, p.Tail(logTailLines))
		}
	})
	return e
}

// Process is one long-running binary started by a test.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	// stopping is set when the test stops the process on purpose, so its
	// exit is not reported as a crash.
	stopping atomic.Bool
}

// Start runs bin with args, its output appended to <LogDir>/<name>.log
// (after a first line with the command), and stops it (SIGTERM, then
// SIGKILL after 15 s) when the test ends.
func (e *Env) Start(name, bin string, args ...string) *Process {
	e.t.Helper()
	p := &Process{Name: name, LogPath: filepath.Join(e.LogDir, name+".log"), done: make(chan struct{})}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		e.t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "### %s %s\n", bin, strings.Join(args, " "))
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.Dir = e.Dir
	// The kernel kills it when the thread that started it dies: a test
	// binary that exits without running its cleanups (a go test timeout
	// panics, ^C) takes the control plane with it instead of leaving an API
	// server and etcd running. (Linux only, like everything this package
	// runs.)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		e.t.Fatalf("start %s (%s): %v", name, bin, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	e.t.Cleanup(func() {
		if err := p.Stop(15 * time.Second); err != nil {
			e.t.Errorf("%s: %v", name, err)
		}
	})
	return p
}

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM and waits up to grace before killing the process. It
// reports a process that had to be killed; a process that already died is
// reported by CheckAlive, not here.
func (p *Process) Stop(grace time.Duration) error {
	if done, _ := p.Exited(); done {
		return nil
	}
	p.stopping.Store(true)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("did not exit within %v of SIGTERM; killed", grace)
	}
}

// Tail returns the last n lines of the process's log.
func (p *Process) Tail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// CheckAlive fails the test if a process the test did not stop has exited
// (waiting on a condition that a dead component can never bring about would
// otherwise only time out), or if a log watched with FailOnLog shows its
// line.
func (e *Env) CheckAlive() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range e.procs {
		if done, err := p.Exited(); done && !p.stopping.Load() {
			e.t.Fatalf("%s exited unexpectedly (%v); last lines of %s:\n%s", p.Name, err, p.LogPath, p.Tail(logTailLines))
		}
	}
	if msg := e.scanLogs(); msg != "" {
		e.t.Fatal(msg)
	}
}

// RBACRefusal is what the API server's refusal of an unauthorized request
// says ("persistentvolumes is forbidden: User \"system:serviceaccount:...\"
// cannot create resource ..."), for FailOnLog: a component whose RBAC lacks
// a permission logs it. Not "forbidden" alone: a validation error says
// Forbidden too ("metadata.finalizers: Forbidden: no new finalizers can be
// added if the object is being deleted", which the snapshot-controller
// meets in a race with a deletion, and retries).
const RBACRefusal = "is forbidden: User"

// FailOnLog makes the test fail as soon as a line containing substr
// (case-insensitive) appears in p's log: during every WaitFor, and at the
// end of the test. Components often retry what they were refused and only
// log it, so a wait would otherwise time out far from the cause.
func (e *Env) FailOnLog(p *Process, substr, meaning string) {
	e.t.Helper()
	e.mu.Lock()
	e.logChecks = append(e.logChecks, &logCheck{p: p, substr: strings.ToLower(substr), meaning: meaning})
	e.mu.Unlock()
	e.t.Cleanup(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if msg := e.scanLogs(); msg != "" {
			e.t.Error(msg)
		}
	})
}

// scanLogs reads what the watched logs gained since the last scan and
// describes the first match ("" if none). Called with e.mu held.
func (e *Env) scanLogs() string {
	for _, c := range e.logChecks {
		f, err := os.Open(c.p.LogPath)
		if err != nil {
			return fmt.Sprintf("%s log: %v", c.p.Name, err)
		}
		_, err = f.Seek(c.offset, io.SeekStart)
		var b []byte
		if err == nil {
			b, err = io.ReadAll(f)
		}
		f.Close()
		if err != nil {
			return fmt.Sprintf("%s log: %v", c.p.Name, err)
		}
		c.offset += int64(len(b))
		text := c.partial + string(b)
		lines := strings.Split(text, "\n")
		c.partial = lines[len(lines)-1]
		for _, l := range lines[:len(lines)-1] {
			if strings.Contains(strings.ToLower(l), c.substr) {
				return fmt.Sprintf("%s: %s; its log (%s) says:\n%s", c.p.Name, c.meaning, c.p.LogPath, l)
			}
		}
	}
	return ""
}

// WaitFor polls cond until it returns true, failing the test after
// timeout with cond's last explanation, or as soon as one of the Env's
// processes dies. It returns how long the wait took. It polls every 100 ms,
// or, when cond itself takes longer (a kubectl run is about 0.2 s of CPU),
// waits three times as long as cond took: the polls of a test take at most
// a quarter of a core from the cluster and the VM they wait on (at 10 Hz,
// kubectl took half of one of the machine's two cores).
func (e *Env) WaitFor(timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	e.t.Helper()
	return e.WaitEvery(100*time.Millisecond, timeout, what, cond)
}

// WaitEvery is WaitFor polling every interval at least: for a cond that
// costs the system under test something (a kubectl exec runs a process in
// the VM).
func (e *Env) WaitEvery(interval, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	e.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	last := ""
	for {
		e.CheckAlive()
		polled := time.Now()
		ok, why := cond()
		if ok {
			return time.Since(start)
		}
		last = why
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %v waiting for %s; last: %s", timeout, what, last)
		}
		time.Sleep(max(interval, 3*time.Since(polled)))
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitListening waits until something accepts connections on addr
// ("unix" socket path or "tcp" host:port).
func (e *Env) WaitListening(timeout time.Duration, network, addr string) time.Duration {
	e.t.Helper()
	return e.WaitFor(timeout, "a listener on "+addr, func() (bool, string) {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
}
