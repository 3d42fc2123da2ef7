package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// ErrNoQemu means qemu-system-x86_64 is not installed; tests skip on it.
var ErrNoQemu = errors.New("qemu-system-x86_64 not found (install qemu-system-x86: `make vm-deps`)")

// Machine is one boot of the VM.
type Machine struct {
	Kernel    Kernel
	Initramfs string
	MemoryMiB int // default 2048
	CPUs      int // default 2
	// ConsoleLog receives the kernel console (ttyS0): dmesg, md and nvme
	// messages. Kept for diagnosing a failed run.
	ConsoleLog string
	// OnLine sees each line of the result stream as it arrives.
	OnLine func(string)
}

// Result is what a boot produced.
type Result struct {
	ExitCode int      // the guest script's exit status; 125 when the guest's own setup failed
	Output   []string // the result stream (ttyS1) between the ready and exit markers
	Setup    string   // the message of a failed guest setup
	Elapsed  time.Duration
}

const (
	readyMarker = "@@NVMIRROR-READY@@"
	exitMarker  = "@@NVMIRROR-EXIT "
)

// Run boots the machine and waits for the guest to power off, the context to
// end, or qemu to die. The guest powers itself off when its script is done, so
// a context deadline is only the guard against a hung kernel.
func (m Machine) Run(ctx context.Context) (Result, error) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return Result{}, ErrNoQemu
	}
	if m.MemoryMiB == 0 {
		m.MemoryMiB = 2048
	}
	if m.CPUs == 0 {
		m.CPUs = 2
	}
	console := m.ConsoleLog
	if console == "" {
		console = os.DevNull
	}
	args := []string{
		// KVM is not available on the build machines; TCG is slower but the
		// same kernel code runs.
		"-machine", "pc", "-accel", "tcg", "-cpu", "max",
		"-m", strconv.Itoa(m.MemoryMiB), "-smp", strconv.Itoa(m.CPUs),
		"-display", "none", "-monitor", "none", "-nic", "none", "-no-reboot",
		"-kernel", m.Kernel.Image, "-initrd", m.Initramfs,
		"-append", "console=ttyS0 panic=-1 loglevel=6 printk.time=1",
		"-serial", "file:" + console,
		"-serial", "stdio",
	}
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Stdin = nil
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Result{}, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("start qemu: %w", err)
	}
	res := Result{ExitCode: -1}
	readErr := scanResults(stdout, &res, m.OnLine)
	waitErr := cmd.Wait()
	res.Elapsed = time.Since(start)
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("VM did not finish in time (%v elapsed): %w", res.Elapsed.Round(time.Second), ctx.Err())
	case readErr != nil:
		return res, readErr
	case res.ExitCode == -1:
		return res, fmt.Errorf("VM stopped without a result (kernel panic or crash? see the console log); qemu: %v %s", waitErr, strings.TrimSpace(stderr.String()))
	case waitErr != nil:
		return res, fmt.Errorf("qemu: %v: %s", waitErr, strings.TrimSpace(stderr.String()))
	}
	return res, nil
}

// scanResults reads the result stream until the exit marker.
func scanResults(r io.Reader, res *Result, onLine func(string)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	ready := false
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if i := strings.Index(line, exitMarker); i >= 0 {
			if i > 0 && ready {
				res.Output = append(res.Output, line[:i])
			}
			rest := line[i+len(exitMarker):]
			code, msg, _ := strings.Cut(rest, "@@")
			n, err := strconv.Atoi(code)
			if err != nil {
				return fmt.Errorf("bad exit marker %q", line)
			}
			res.ExitCode = n
			res.Setup = strings.TrimSpace(msg)
			// Drain so qemu never blocks writing to a full pipe.
			_, _ = io.Copy(io.Discard, r)
			return nil
		}
		if !ready {
			ready = strings.Contains(line, readyMarker)
			continue
		}
		res.Output = append(res.Output, line)
		if onLine != nil {
			onLine(line)
		}
	}
	return sc.Err()
}

// ConsoleTail returns the last n lines of a console log, for failure reports.
func ConsoleTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(console log %s unreadable: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
