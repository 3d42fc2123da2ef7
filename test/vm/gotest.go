package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// EnvRequire makes missing prerequisites fail instead of skip. `make test`
// sets it so that CI can never pass by skipping the real-kernel tests.
const EnvRequire = "NVMIRROR_REQUIRE_VM"

// NarrationMarker starts a guest output line meant for the person running
// the tests (the demo's timeline): the host prints it as it arrives,
// without the marker, instead of keeping it for the replay.
const NarrationMarker = "@@SAY "

// EnvRun overrides the guest's -test.run pattern, to run one scenario while
// working on it: NVMIRROR_VM_RUN=TestDataPath go test ./test/kernel/
const EnvRun = "NVMIRROR_VM_RUN"

// GuestTests is a set of Go tests to run inside the VM.
type GuestTests struct {
	// Package is the import path (or ./relative path from the repo root) of
	// the package whose tests, built with the vmguest tag, run in the guest.
	Package string
	// Commands are main packages built into /nvmirror/bin in the guest.
	Commands []string
	// Pattern is the guest's -test.run pattern; empty runs everything.
	Pattern string
	// Timeout bounds the whole boot; the guest's own -test.timeout is a
	// little shorter so a hung guest test still reports its stack.
	Timeout time.Duration
	// MemoryMiB of the VM; 0 means the default.
	MemoryMiB int
}

// Prerequisites returns the kernel, or skips (fails under
// NVMIRROR_REQUIRE_VM=1) with a message saying what is missing.
func Prerequisites(t testing.TB) Kernel {
	t.Helper()
	var missing []string
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		missing = append(missing, ErrNoQemu.Error())
	}
	if _, err := findBusybox(); err != nil {
		missing = append(missing, err.Error())
	}
	k, err := FindKernel()
	if err != nil {
		missing = append(missing, err.Error())
	}
	if len(missing) > 0 {
		msg := "real-kernel tests need a VM: " + strings.Join(missing, "; ")
		if os.Getenv(EnvRequire) != "" {
			t.Fatalf("%s (%s is set, so this is a failure, not a skip)", msg, EnvRequire)
		}
		t.Skip(msg)
	}
	return k
}

// Run builds the guest tests and commands, boots the VM, and replays every
// guest test as a subtest of t with its output and result.
func (g GuestTests) Run(t *testing.T) {
	t.Helper()
	k := Prerequisites(t)
	repo, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if g.Timeout == 0 {
		g.Timeout = 15 * time.Minute
	}
	work := t.TempDir()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not in PATH: %v", err)
	}
	build := func(args ...string) {
		t.Helper()
		cmd := exec.Command(goBin, args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	start := time.Now()
	testBin := filepath.Join(work, "guest.test")
	build("test", "-c", "-tags", "vmguest", "-o", testBin, g.Package)
	files := map[string]string{"/nvmirror/tests/guest.test": testBin}
	for _, c := range g.Commands {
		out := filepath.Join(work, "bin", filepath.Base(c))
		build("build", "-o", out, c)
		files["/nvmirror/bin/"+filepath.Base(c)] = out
	}
	if p := os.Getenv(EnvRun); p != "" {
		g.Pattern = p
	}
	guestTimeout := g.Timeout - time.Minute
	script := fmt.Sprintf("exec /nvmirror/tests/guest.test -test.v=test2json -test.count=1 -test.timeout=%s", guestTimeout)
	if g.Pattern != "" {
		script += fmt.Sprintf(" -test.run '%s'", g.Pattern)
	}
	img := Image{
		Kernel:          k,
		Modules:         DataPathModules,
		OptionalModules: DataPathOptionalModules,
		Tools:           DataPathTools,
		Files:           files,
		Script:          script,
	}
	initrd := filepath.Join(work, "initrd.gz")
	if err := img.Build(initrd); err != nil {
		t.Fatalf("build initramfs: %v", err)
	}
	t.Logf("built guest tests and initramfs in %v; booting kernel %s", time.Since(start).Round(time.Millisecond), k.Version)

	console := filepath.Join(work, "console.log")
	if dir := os.Getenv("NVMIRROR_VM_LOGDIR"); dir != "" {
		_ = os.MkdirAll(dir, 0o755)
		console = filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".console.log")
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.Timeout)
	defer cancel()
	m := Machine{Kernel: k, Initramfs: initrd, ConsoleLog: console, MemoryMiB: g.MemoryMiB,
		OnLine: func(line string) {
			if i := strings.Index(line, NarrationMarker); i >= 0 {
				fmt.Println(line[i+len(NarrationMarker):])
				return
			}
			// Progress while the VM runs: which guest test starts and ends.
			l := strings.TrimLeft(line, "\x16 ")
			if strings.HasPrefix(l, "=== RUN") || strings.HasPrefix(l, "--- ") {
				t.Logf("guest: %s", l)
			}
		}}
	res, runErr := m.Run(ctx)
	t.Logf("VM ran %v (boot, tests, power-off)", res.Elapsed.Round(time.Millisecond))
	if replayErr := replay(t, goBin, res.Output); replayErr != nil {
		t.Errorf("reading guest test results: %v", replayErr)
	}
	switch {
	case runErr != nil:
		t.Fatalf("%v\n--- kernel console (last 60 lines) ---\n%s", runErr, ConsoleTail(console, 60))
	case res.ExitCode == 125:
		t.Fatalf("guest setup failed: %s\n--- kernel console (last 60 lines) ---\n%s", res.Setup, ConsoleTail(console, 60))
	case res.ExitCode != 0:
		t.Errorf("guest tests exited %d\n--- kernel console (last 60 lines) ---\n%s", res.ExitCode, ConsoleTail(console, 60))
	}
}

// testEvent is one line of `go tool test2json` output.
type testEvent struct {
	Action  string
	Test    string
	Output  string
	Elapsed float64
}

type testNode struct {
	name     string
	output   []string
	action   string
	elapsed  float64
	children []*testNode
	byName   map[string]*testNode
}

func (n *testNode) child(name string) *testNode {
	if n.byName == nil {
		n.byName = map[string]*testNode{}
	}
	c, ok := n.byName[name]
	if !ok {
		c = &testNode{name: name}
		n.byName[name] = c
		n.children = append(n.children, c)
	}
	return c
}

// replay turns the guest's test2json stream back into subtests of t.
func replay(t *testing.T, goBin string, output []string) error {
	cmd := exec.Command(goBin, "tool", "test2json", "-t")
	cmd.Stdin = strings.NewReader(strings.Join(output, "\n") + "\n")
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("go tool test2json: %w", err)
	}
	root := &testNode{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var ev testEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return err
		}
		node := root
		if ev.Test != "" {
			for _, part := range strings.Split(ev.Test, "/") {
				node = node.child(part)
			}
		}
		switch ev.Action {
		case "output":
			node.output = append(node.output, strings.TrimRight(ev.Output, "\n"))
		case "pass", "fail", "skip":
			node.action, node.elapsed = ev.Action, ev.Elapsed
		}
	}
	if len(root.children) == 0 {
		return fmt.Errorf("the guest ran no test; its output:\n%s", strings.Join(root.output, "\n"))
	}
	for _, c := range root.children {
		replayNode(t, c)
	}
	return nil
}

func replayNode(t *testing.T, n *testNode) {
	t.Run(n.name, func(t *testing.T) {
		for _, line := range n.output {
			trimmed := strings.TrimSpace(line)
			// Drop the framing lines test2json already turned into events,
			// and narration, printed live already.
			if strings.HasPrefix(trimmed, "=== ") || strings.HasPrefix(trimmed, "--- ") || strings.Contains(line, NarrationMarker) {
				continue
			}
			t.Log(line)
		}
		for _, c := range n.children {
			replayNode(t, c)
		}
		if n.action != "" {
			t.Logf("%s in the VM after %.2fs", n.action, n.elapsed)
		}
		switch n.action {
		case "fail":
			t.Errorf("failed in the VM after %.2fs", n.elapsed)
		case "skip":
			t.Skip("skipped in the VM")
		case "":
			t.Error("no result from the VM (guest test timed out or the VM died)")
		}
	})
}
