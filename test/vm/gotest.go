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
	"sort"
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

// EnvRun picks guest tests across every boot, to run one scenario while
// working on it: NVMIRROR_VM_RUN=TestDataPath go test ./test/kernel/
// It replaces each boot's Pattern as the guest's -test.run (subtest parts
// apply), but a boot only ever runs its own tests (Pattern minus Skip): a
// boot that owns none of the named tests skips without booting, so naming a
// 6.1 scenario does not boot the auth kernel, and vice versa.
const EnvRun = "NVMIRROR_VM_RUN"

// GuestTests is a set of Go tests to run inside the VM.
type GuestTests struct {
	// Package is the import path (or ./relative path from the repo root) of
	// the package whose tests, built with the vmguest tag, run in the guest.
	Package string
	// Commands are main packages built into /nvmirror/bin in the guest.
	Commands []string
	// Pattern selects the guest tests of this boot (-test.run syntax);
	// empty means all of them.
	Pattern string
	// Skip removes tests from this boot (-test.skip syntax), e.g. those
	// that another boot runs on another kernel.
	Skip string
	// KernelDir names the kernel to boot: a directory laid out like
	// .cache/vm/kernel (boot/vmlinuz-V, lib/modules/V), relative to the repo
	// root, e.g. AuthKernelDir. Empty means the default kernel (FindKernel,
	// which $NVMIRROR_VM_KERNEL_DIR overrides).
	KernelDir string
	// Timeout bounds the whole boot; the guest's own -test.timeout is a
	// little shorter so a hung guest test still reports its stack.
	Timeout time.Duration
	// MemoryMiB of the VM; 0 means the default.
	MemoryMiB int
	// Tools and Modules are added to DataPathTools and DataPathModules for
	// this boot only (e.g. the benchmark's fio and drbd).
	Tools   []string
	Modules []string
	// Env is set in the guest test binary's environment.
	Env map[string]string
	// DiskMiB, when positive, gives the VM a scratch disk of that size: a
	// new sparse file in the test's temporary directory on the host,
	// attached as a virtio disk, GuestDisk in the guest, where EnvDisk
	// names it. It holds nothing: the guest test formats it. For data that
	// does not fit in guest RAM; see disk.go.
	DiskMiB int
	// OnOutput, when set, sees every line of the guest's result stream as
	// it arrives (e.g. a line carrying a guest test's measurements).
	OnOutput func(line string)
}

// Prerequisites returns the default kernel, or skips (fails under
// NVMIRROR_REQUIRE_VM=1) with a message saying what is missing.
func Prerequisites(t testing.TB) Kernel {
	t.Helper()
	return PrerequisitesFor(t, "")
}

// PrerequisitesFor is Prerequisites for the kernel in kernelDir (see
// GuestTests.KernelDir; "" is the default kernel).
func PrerequisitesFor(t testing.TB, kernelDir string) Kernel {
	t.Helper()
	var missing []string
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		missing = append(missing, ErrNoQemu.Error())
	}
	if _, err := findBusybox(); err != nil {
		missing = append(missing, err.Error())
	}
	k, err := findKernelFor(kernelDir)
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
	all, err := listTests(repo, goBin, g.Package)
	if err != nil {
		t.Fatalf("listing the guest tests: %v", err)
	}
	sel, err := selectTests(all, g.Pattern, g.Skip, os.Getenv(EnvRun))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case len(sel.OwnTests) == 0:
		t.Fatalf("no guest test in %s is this boot's (Pattern %q, Skip %q); its tests: %v", g.Package, g.Pattern, g.Skip, all)
	case len(sel.Tests) == 0:
		t.Skipf("%s=%q names none of this boot's guest tests %v", EnvRun, os.Getenv(EnvRun), sel.OwnTests)
	}
	// After the selection: a boot that NVMIRROR_VM_RUN leaves out needs no
	// kernel, even under NVMIRROR_REQUIRE_VM.
	k := PrerequisitesFor(t, g.KernelDir)
	start := time.Now()
	testBin, files := buildGuest(t, repo, goBin, g.Package, g.Commands)
	files["/nvmirror/tests/guest.test"] = testBin
	guestTimeout := g.Timeout - time.Minute
	guestEnv := map[string]string{}
	for k, v := range g.Env {
		guestEnv[k] = v
	}
	var disk string
	modules := append(append([]string{}, DataPathModules...), g.Modules...)
	if g.DiskMiB > 0 {
		dm, err := DiskModules(k)
		if err != nil {
			t.Fatalf("kernel %s: %v", k.Version, err)
		}
		modules = append(modules, dm...)
		disk = filepath.Join(work, "disk.raw")
		if err := newSparseDisk(disk, g.DiskMiB); err != nil {
			t.Fatalf("scratch disk: %v", err)
		}
		guestEnv[EnvDisk] = GuestDisk
	}
	var env []string
	for k, v := range guestEnv {
		env = append(env, "export "+k+"="+shellQuote(v)+"\n")
	}
	sort.Strings(env)
	script := strings.Join(env, "") + fmt.Sprintf("exec /nvmirror/tests/guest.test -test.v=test2json -test.count=1 -test.timeout=%s", guestTimeout)
	if sel.Run != "" {
		script += " -test.run " + shellQuote(sel.Run)
	}
	if sel.Skip != "" {
		script += " -test.skip " + shellQuote(sel.Skip)
	}
	img := Image{
		Kernel:          k,
		Modules:         modules,
		OptionalModules: DataPathOptionalModules,
		Tools:           append(append([]string{}, DataPathTools...), g.Tools...),
		Files:           files,
		Script:          script,
		Disk:            disk != "",
	}
	initrd := filepath.Join(work, "initrd.gz")
	if err := img.Build(initrd); err != nil {
		t.Fatalf("build initramfs: %v", err)
	}
	withDisk := ""
	if disk != "" {
		withDisk = fmt.Sprintf(" with a %d MiB scratch disk", g.DiskMiB)
	}
	t.Logf("built guest tests and initramfs in %v; booting kernel %s%s for %v", time.Since(start).Round(time.Millisecond), k.Version, withDisk, sel.Tests)

	console := logPath(t, work, "console.log")
	ctx, cancel := context.WithTimeout(context.Background(), g.Timeout)
	defer cancel()
	m := Machine{Kernel: k, Initramfs: initrd, ConsoleLog: console, MemoryMiB: g.MemoryMiB, Disk: disk,
		OnLine: func(line string) {
			if g.OnOutput != nil {
				g.OnOutput(line)
			}
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

// EnvLogDir names a directory where each boot keeps its kernel console log
// (and a service VM its output), named after the test.
const EnvLogDir = "NVMIRROR_VM_LOGDIR"

// logPath is where a boot keeps a log: in $NVMIRROR_VM_LOGDIR, named after
// the test, when set, else in the test's work directory.
func logPath(t testing.TB, work, suffix string) string {
	if dir := os.Getenv(EnvLogDir); dir != "" {
		_ = os.MkdirAll(dir, 0o755)
		return filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"."+suffix)
	}
	return filepath.Join(work, suffix)
}

// shellQuote quotes s for the guest's sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
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
