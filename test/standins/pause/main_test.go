package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// modeEnv makes the test binary, run as a subprocess, play a part instead of
// running the tests.
const modeEnv = "PAUSE_TEST_MODE"

func TestMain(m *testing.M) {
	switch os.Getenv(modeEnv) {
	case "":
		os.Exit(m.Run())
	case "pause":
		// pause as it runs, but saying when its handlers are in place:
		// a signal sent before would find Go's default action.
		sigs := notify()
		fmt.Println("ready")
		os.Exit(wait(sigs, reap))
	case "pause-parent":
		// pause as the pod's PID 1, which orphans are reparented to: here
		// a subreaper, with a child that leaves a grandchild behind.
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			fmt.Println("prctl:", err)
			os.Exit(3)
		}
		sigs := notify()
		child, err := os.StartProcess(os.Args[0], os.Args[:1], &os.ProcAttr{
			Env:   envWithMode("spawn"),
			Files: []*os.File{nil, os.Stderr, os.Stderr},
		})
		if err != nil {
			fmt.Println("start:", err)
			os.Exit(3)
		}
		fmt.Println("ready", child.Pid) // never waited for: pause must reap it
		os.Exit(wait(sigs, reap))
	case "spawn":
		// Starts a grandchild that outlives this process, then exits.
		gc, err := os.StartProcess(os.Args[0], os.Args[:1], &os.ProcAttr{
			Env:   envWithMode("sleep"),
			Files: []*os.File{nil, os.Stderr, os.Stderr},
		})
		if err != nil {
			os.Exit(3)
		}
		os.WriteFile(os.Getenv("PAUSE_TEST_PIDFILE"), []byte(strconv.Itoa(gc.Pid)), 0o644)
		os.Exit(0)
	case "sleep":
		time.Sleep(300 * time.Millisecond)
		os.Exit(0)
	}
}

// envWithMode is this process's environment with the mode replaced: Go
// takes the first of duplicate variables, so appending is not enough.
func envWithMode(mode string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, modeEnv+"=") {
			env = append(env, kv)
		}
	}
	return append(env, modeEnv+"="+mode)
}

// startPause starts the test binary in mode and returns it with the fields of
// its "ready" line.
func startPause(t *testing.T, mode string, env ...string) (*exec.Cmd, []string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(envWithMode(mode), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	fields := strings.Fields(line)
	if err != nil || len(fields) == 0 || fields[0] != "ready" {
		t.Fatalf("pause said %q, %v", line, err)
	}
	return cmd, fields[1:]
}

func waitExit(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("pause did not exit")
		return nil
	}
}

// SIGTERM (kubelet stopping the sandbox) and SIGINT end pause with status 0;
// until then it keeps running.
func TestExitsZeroOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd, _ := startPause(t, "pause")
			time.Sleep(100 * time.Millisecond)
			if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
				t.Fatalf("pause is gone before any signal: %v", err)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if err := waitExit(t, cmd); err != nil {
				t.Errorf("pause after %v: %v, want exit status 0", sig, err)
			}
		})
	}
}

// An exited child and an orphaned grandchild reparented to pause are reaped:
// neither stays a zombie.
func TestReapsChildrenAndOrphans(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "grandchild")
	cmd, fields := startPause(t, "pause-parent", "PAUSE_TEST_PIDFILE="+pidFile)
	child, err := strconv.Atoi(fields[0])
	if err != nil {
		t.Fatal(fields)
	}
	var grandchild int
	deadline := time.Now().Add(10 * time.Second)
	for grandchild == 0 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(pidFile)
		grandchild, _ = strconv.Atoi(string(b))
		time.Sleep(10 * time.Millisecond)
	}
	if grandchild == 0 {
		t.Fatal("the child never started the grandchild")
	}
	// A zombie keeps its /proc entry until its parent reaps it.
	for _, pid := range []int{child, grandchild} {
		for {
			_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
			if errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				state, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
				t.Fatalf("process %d not reaped: %s", pid, state)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("pause exited while reaping: %v", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := waitExit(t, cmd); err != nil {
		t.Errorf("pause after SIGTERM: %v", err)
	}
}
