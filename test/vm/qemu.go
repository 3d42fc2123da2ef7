package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
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
	// Forward gives the VM a virtio-net NIC on qemu's user-mode network and
	// forwards each host port (on 127.0.0.1) to a guest port. The network is
	// restricted: the guest can answer forwarded connections but reach
	// nothing. Without forwards the VM has no NIC at all. The initramfs must
	// bring the NIC up (Image.Network).
	Forward []PortForward
	// Disk, when set, is a raw image file attached as the VM's virtio disk
	// (GuestDisk in the guest); the initramfs must load DiskModules and
	// wait for it (Image.Disk). See disk.go.
	Disk string
	// ReadOnlyDisks are image files attached read-only as further virtio
	// disks, after Disk (/dev/vdb, /dev/vdc... with a Disk, from /dev/vda
	// without): prepared data too large for the initramfs, e.g. container
	// images on an ext4 image made by mkfs.ext4 -d.
	ReadOnlyDisks []string
	// GuestForward lets the guest open connections to an address of qemu's
	// user-mode network that reach a port on the host's loopback: the only
	// way out of the restricted network (Forward), one address and port at a
	// time. Each connection runs a relay on the host (busybox nc).
	GuestForward []GuestForward
}

// GuestForward is one guest-to-host forward: a connection from the guest to
// GuestAddr ("10.0.2.100:6443", an unused address of 10.0.2.0/24) reaches
// 127.0.0.1:HostPort on the host.
type GuestForward struct {
	GuestAddr string
	HostPort  int
}

// PortForward is one forwarded TCP port: 127.0.0.1:HostPort on the host
// reaches GuestPort on the guest's eth0.
type PortForward struct {
	HostPort, GuestPort int
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
	p, err := m.start(ctx, false)
	if err != nil {
		return Result{}, err
	}
	return p.wait()
}

// process is a running qemu.
type process struct {
	ctx    context.Context
	cmd    *exec.Cmd
	input  *os.File // writes to the guest's ttyS1; nil unless asked for
	stderr lockedBuffer
	start  time.Time
	done   chan struct{} // closed once qemu exited and its output is read
	// Set before done is closed.
	res              Result
	readErr, waitErr error
}

// start launches qemu. With input, the guest can read what is written to
// p.input on its ttyS1 (a service VM's stop request); otherwise qemu's stdin
// is /dev/null.
func (m Machine) start(ctx context.Context, input bool) (*process, error) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, ErrNoQemu
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
	nic := []string{"-nic", "none"}
	if len(m.Forward) > 0 || len(m.GuestForward) > 0 {
		netdev := "user,id=n0,restrict=on"
		for _, f := range m.Forward {
			netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", f.HostPort, f.GuestPort)
		}
		if len(m.GuestForward) > 0 {
			bb, err := findBusybox()
			if err != nil {
				return nil, err
			}
			for _, f := range m.GuestForward {
				// restrict=on leaves explicit forwards working; qemu runs the
				// command for each connection, its stdio the connection.
				netdev += fmt.Sprintf(",guestfwd=tcp:%s-cmd:%s nc 127.0.0.1 %d", f.GuestAddr, bb, f.HostPort)
			}
		}
		nic = []string{"-netdev", netdev, "-device", "virtio-net-pci,netdev=n0"}
	}
	args := []string{
		// KVM is not available on the build machines; TCG is slower but the
		// same kernel code runs.
		"-machine", "pc", "-accel", "tcg", "-cpu", "max",
		"-m", strconv.Itoa(m.MemoryMiB), "-smp", strconv.Itoa(m.CPUs),
		"-display", "none", "-monitor", "none", "-no-reboot",
	}
	args = append(args, nic...)
	if m.Disk != "" {
		args = append(args, driveArgs(m.Disk)...)
	}
	for _, d := range m.ReadOnlyDisks {
		args = append(args, readOnlyDriveArgs(d)...)
	}
	args = append(args,
		"-kernel", m.Kernel.Image, "-initrd", m.Initramfs,
		"-append", "console=ttyS0 panic=-1 loglevel=6 printk.time=1",
		"-serial", "file:"+console,
		"-serial", "stdio",
	)
	p := &process{ctx: ctx, done: make(chan struct{}), res: Result{ExitCode: -1}}
	p.cmd = exec.CommandContext(ctx, qemu, args...)
	p.cmd.WaitDelay = 5 * time.Second
	p.cmd.Stderr = &p.stderr
	killWithParent(p.cmd)
	// Plain pipes rather than StdoutPipe: Wait runs on its own goroutine
	// (below) and must not close the stream while it is still being read.
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stdout = outW
	var inR *os.File
	if input {
		if inR, p.input, err = os.Pipe(); err != nil {
			outR.Close()
			outW.Close()
			return nil, err
		}
		p.cmd.Stdin = inR
	}
	// The thread that forks qemu must live as long as qemu does: the
	// parent-death signal (killWithParent) fires when that thread exits, not
	// the process. A goroutine locked to its thread from Start to Wait keeps
	// it alive, so qemu dies only with the test binary (e.g. on a go test
	// timeout, which runs no cleanup) and is never left behind.
	started := make(chan error, 1)
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		p.start = time.Now()
		started <- nil
		p.waitErr = p.cmd.Wait()
	}()
	err = <-started
	// qemu holds its own copies of the pipe ends it uses.
	outW.Close()
	if inR != nil {
		inR.Close()
	}
	if err != nil {
		outR.Close()
		if p.input != nil {
			p.input.Close()
		}
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	go func() {
		p.readErr = scanResults(outR, &p.res, m.OnLine)
		outR.Close()
		<-waited
		p.res.Elapsed = time.Since(p.start)
		if p.input != nil {
			p.input.Close()
		}
		close(p.done)
	}()
	return p, nil
}

// wait waits for qemu to exit and says how the boot ended.
func (p *process) wait() (Result, error) {
	<-p.done
	res := p.res
	switch {
	case res.ExitCode == -1 && p.ctx.Err() != nil:
		// Killed by the context (a guest that printed its exit marker
		// finished, even if the context ended as qemu powered off).
		return res, fmt.Errorf("VM did not finish in time (%v elapsed): %w", res.Elapsed.Round(time.Second), p.ctx.Err())
	case p.readErr != nil:
		return res, p.readErr
	case res.ExitCode == -1:
		return res, fmt.Errorf("VM stopped without a result (kernel panic or crash? see the console log); qemu: %v %s", p.waitErr, strings.TrimSpace(p.stderr.String()))
	case p.waitErr != nil:
		return res, fmt.Errorf("qemu: %v: %s", p.waitErr, strings.TrimSpace(p.stderr.String()))
	}
	return res, nil
}

// lockedBuffer collects qemu's stderr, which exec copies on a goroutine of
// its own while others may read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
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
