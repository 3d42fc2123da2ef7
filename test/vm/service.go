package vm

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// ServiceConfig describes a service VM: a VM that runs programs (storage
// node agents needing the kernel's nvmet, md...) for a test on the host,
// which reaches them over forwarded TCP ports, until the test ends.
type ServiceConfig struct {
	// KernelDir selects the kernel like GuestTests.KernelDir; "" is the
	// default kernel.
	KernelDir string
	// Commands are main packages built (static linux/amd64) into
	// /nvmirror/bin, which is on the guest's PATH.
	Commands []string
	// Files maps a guest path to a host file copied there (certificates,
	// tokens, configuration).
	Files map[string]string
	// Script is a guest shell script (sh, busybox) run as root in
	// /nvmirror once the system is up. It starts the services in the
	// background and returns (a non-zero status fails StartService); its
	// output and the services' stdout and stderr are the VM's output lines.
	Script string
	// Forward lists guest TCP ports to reach from the host: each gets a
	// free port on 127.0.0.1 (HostAddr). With any, the VM has a NIC and the
	// guest is GuestIP; services must listen on it or on all addresses.
	Forward []int
	// FixedForward are forwards whose host port the caller chose (free on
	// 127.0.0.1), for a guest service that must know the port the host
	// reaches it at, e.g. a kubelet announcing its port to the API server
	// (usually the same number in the guest).
	FixedForward []PortForward
	// GuestForward lets the guest reach host ports (Machine.GuestForward).
	GuestForward []GuestForward
	// Modules are kernel modules loaded besides the data path's (and the
	// NIC's), with their dependencies; Tools host executables copied in
	// with their libraries (Image.Tools).
	Modules, Tools []string
	// DiskMiB, when positive, gives the VM a blank scratch disk of that size
	// (GuestDisk, /dev/vda; the script formats it). ReadOnlyDisks are image
	// files attached read-only after it (Machine.ReadOnlyDisks).
	DiskMiB       int
	ReadOnlyDisks []string
	// MemoryMiB of the VM; 0 means the default (2048).
	MemoryMiB int
	// ReadyLine is an output line (a substring of one) that means the
	// services are up: printed by Script once it has checked them, or by a
	// service. Empty means "Script returned".
	ReadyLine string
	// ReadyTimeout bounds boot plus Script until ReadyLine; default 3
	// minutes (a boot takes 10-20 s under TCG).
	ReadyTimeout time.Duration
	// ReadyCheck, when set, is the host's check, after ReadyLine, that the
	// guest it booted works (e.g. that a kubelet registered its node),
	// bounded by ReadyCheckTimeout (default 3 minutes). A boot that fails
	// it is stopped and booted again, once, its logs kept (EarlierLogs);
	// a second failure fails the test. It is for faults of the emulated
	// machine that a fresh boot clears, never for the code under test: a
	// kubelet node once lost every connection to the API server from its
	// start, its kernel later found spinning in TCP code (docs/testing.md).
	ReadyCheck        func(ctx context.Context) error
	ReadyCheckTimeout time.Duration
	// OnLine sees each output line as it arrives (from another goroutine).
	OnLine func(line string)
}

// Service is a running service VM.
type Service struct {
	// Kernel is the kernel it booted.
	Kernel Kernel
	// ConsoleLog and OutputLog are the files holding the kernel console and
	// the output lines; in $NVMIRROR_VM_LOGDIR, named after the test, when set.
	ConsoleLog, OutputLog string
	// EarlierLogs are the console and output logs of the boots before this
	// one that failed ServiceConfig.ReadyCheck, renamed NAME.bootN.*.log.
	EarlierLogs []string

	t        testing.TB
	proc     *process
	cancel   context.CancelFunc
	hostFwd  map[int]int // guest port -> host port
	guestFwd []GuestForward

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced when a line arrives or qemu exits
	exited  bool

	stopOnce sync.Once
	stopped  chan struct{} // closed when Stop has begun
}

const (
	// serviceStartedLine is printed after Script returns, the ready line
	// when ServiceConfig.ReadyLine is empty.
	serviceStartedLine = "@@NVMIRROR-SERVICE-STARTED@@"
	// serviceStopLine, written to the guest's ttyS1, ends the VM.
	serviceStopLine = "@@NVMIRROR-SERVICE-STOP@@"
	// serviceStopGrace is how long Stop waits for the guest to power off
	// before killing qemu.
	serviceStopGrace = 20 * time.Second
	// serviceForwardAttempts bounds the boots when another process takes
	// a host port between freePorts and qemu binding it.
	serviceForwardAttempts = 3
)

// serviceRunScript is the guest's run.sh for a service VM: the user's script,
// then a wait for the host's stop request. The services keep running after
// their script returns because nothing kills a background job when its
// shell exits; init powers the VM off when this script ends.
const serviceRunScript = `sh /nvmirror/service.sh || { rc=$?; echo "service script exited $rc"; exit $rc; }
echo "` + serviceStartedLine + `"
while read -r line < /dev/ttyS1; do
	[ "$line" = "` + serviceStopLine + `" ] && exit 0
done
echo "reading the stop request from ttyS1 failed"
exit 1
`

// StartService builds the commands and the initramfs, boots the VM, and
// returns once ReadyLine was printed. It skips the test when qemu or the
// kernel is missing (fails under NVMIRROR_REQUIRE_VM=1), fails it when the
// VM does not come up, and stops the VM in t.Cleanup; on failure the
// cleanup logs the VM's output and the console's tail.
func StartService(t testing.TB, cfg ServiceConfig) *Service {
	t.Helper()
	k := PrerequisitesFor(t, cfg.KernelDir)
	repo, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not in PATH: %v", err)
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 3 * time.Minute
	}
	if cfg.ReadyLine == "" {
		cfg.ReadyLine = serviceStartedLine
	}
	if cfg.ReadyCheckTimeout == 0 {
		cfg.ReadyCheckTimeout = 3 * time.Minute
	}
	work := t.TempDir()
	start := time.Now()

	_, files := buildGuest(t, repo, goBin, "", cfg.Commands)
	for guest, host := range cfg.Files {
		files[guest] = host
	}
	script := filepath.Join(work, "service.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"+cfg.Script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	files["/nvmirror/service.sh"] = script
	img := Image{
		Kernel:          k,
		Modules:         append(append([]string(nil), DataPathModules...), cfg.Modules...),
		OptionalModules: DataPathOptionalModules,
		Tools:           append(append([]string(nil), DataPathTools...), cfg.Tools...),
		Files:           files,
		Script:          serviceRunScript,
		Network:         len(cfg.Forward)+len(cfg.FixedForward)+len(cfg.GuestForward) > 0,
		Disk:            cfg.DiskMiB > 0 || len(cfg.ReadOnlyDisks) > 0,
	}
	if img.Network {
		nm, err := NetModules(k)
		if err != nil {
			t.Fatalf("kernel %s: %v", k.Version, err)
		}
		img.Modules = append(img.Modules, nm...)
	}
	if img.Disk {
		dm, err := DiskModules(k)
		if err != nil {
			t.Fatalf("kernel %s: %v", k.Version, err)
		}
		img.Modules = append(img.Modules, dm...)
	}
	initrd := filepath.Join(work, "initrd.gz")
	if err := img.Build(initrd); err != nil {
		t.Fatalf("build initramfs: %v", err)
	}
	t.Logf("built service VM image in %v; booting kernel %s", time.Since(start).Round(time.Millisecond), k.Version)

	// One cleanup for whichever boot is current, registered before the
	// first one starts so that no exit path leaves qemu running.
	var s *Service
	var earlier []string // EarlierLogs
	t.Cleanup(func() {
		if s != nil {
			s.cleanup()
		}
	})
	for attempt := 1; ; attempt++ {
		if s, err = bootService(t, k, initrd, work, cfg); err != nil {
			t.Fatalf("service VM: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ReadyTimeout)
		_, err = s.WaitLine(ctx, cfg.ReadyLine)
		cancel()
		if err == nil && cfg.ReadyCheck != nil {
			if err = runReadyCheck(cfg); err != nil {
				if len(earlier) > 0 {
					// The cleanup logs the VM's output and console.
					t.Fatalf("service VM failed its ready check at a second boot too: %v", err)
				}
				s.Stop()
				kept := s.keepLogs(attempt)
				earlier = append(earlier, kept...)
				t.Logf("service VM failed its ready check (%v); booting it again, once. This boot's logs: %s; its console's end:\n%s",
					err, strings.Join(kept, ", "), ConsoleTail(kept[0], 40))
				continue
			}
		}
		if err == nil {
			break
		}
		how := "stopped"
		select {
		case <-s.proc.done:
			how = s.exitInfo()
		default:
		}
		s.Stop()
		// qemu exits at once when another process took a host port
		// between freePorts and qemu binding it.
		if stderr := s.proc.stderr.String(); strings.Contains(stderr, "host forwarding") && attempt < serviceForwardAttempts {
			t.Logf("%s; retrying with other ports", strings.TrimSpace(stderr))
			continue
		}
		// TCG now and then crashes a kernel in its first second (an int3
		// Oops in timer code while patching text, seen with 6.12): nothing
		// of the guest ran, so booting again tests the same thing.
		if oops := crashedWhileBooting(len(s.Lines()), ConsoleTail(s.ConsoleLog, 200)); oops != "" && attempt < serviceForwardAttempts {
			t.Logf("the kernel crashed while booting under emulation (%s); booting again", oops)
			continue
		}
		// The cleanup logs the VM's output and console.
		t.Fatalf("service VM not ready: %v (%s)", err, how)
	}
	s.EarlierLogs = earlier
	t.Logf("service VM ready in %v; %s", time.Since(s.proc.start).Round(time.Millisecond), s.forwards())
	return s
}

// runReadyCheck runs cfg.ReadyCheck within cfg.ReadyCheckTimeout.
func runReadyCheck(cfg ServiceConfig) error {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ReadyCheckTimeout)
	defer cancel()
	return cfg.ReadyCheck(ctx)
}

// keepLogs renames a stopped boot's console and output logs to
// NAME.bootN.console.log and NAME.bootN.service.log, so that the next boot
// does not overwrite them, and returns their new paths (console first).
func (s *Service) keepLogs(boot int) []string {
	var kept []string
	for _, p := range []string{s.ConsoleLog, s.OutputLog} {
		// TEST.console.log (logPath) becomes TEST.bootN.console.log.
		dir, name := filepath.Split(p)
		base := strings.TrimSuffix(name, ".log")
		i := strings.LastIndex(base, ".")
		kp := filepath.Join(dir, fmt.Sprintf("%sboot%d.%s.log", base[:i+1], boot, base[i+1:]))
		if err := os.Rename(p, kp); err != nil {
			s.t.Logf("keeping the logs of boot %d: %v", boot, err)
			kp = p
		}
		kept = append(kept, kp)
	}
	return kept
}

// bootService starts qemu for the service VM, with fresh host ports.
func bootService(t testing.TB, k Kernel, initrd, work string, cfg ServiceConfig) (*Service, error) {
	disk := ""
	if cfg.DiskMiB > 0 {
		// A new blank disk at every boot: a retried boot must not find
		// the last one's data.
		f, err := os.CreateTemp(work, "disk-*.raw")
		if err != nil {
			return nil, err
		}
		disk = f.Name()
		f.Close()
		os.Remove(disk)
		if err := newSparseDisk(disk, cfg.DiskMiB); err != nil {
			return nil, err
		}
	}
	s := &Service{
		Kernel:     k,
		ConsoleLog: logPath(t, work, "console.log"),
		OutputLog:  logPath(t, work, "service.log"),
		t:          t,
		hostFwd:    map[int]int{},
		guestFwd:   cfg.GuestForward,
		changed:    make(chan struct{}),
		stopped:    make(chan struct{}),
	}
	ports, err := freePorts(len(cfg.Forward))
	if err != nil {
		return nil, err
	}
	var fwd []PortForward
	for _, f := range cfg.FixedForward {
		if _, dup := s.hostFwd[f.GuestPort]; dup {
			return nil, fmt.Errorf("guest port %d forwarded twice", f.GuestPort)
		}
		s.hostFwd[f.GuestPort] = f.HostPort
		fwd = append(fwd, f)
	}
	for i, g := range cfg.Forward {
		if _, dup := s.hostFwd[g]; dup {
			return nil, fmt.Errorf("guest port %d forwarded twice", g)
		}
		s.hostFwd[g] = ports[i]
		fwd = append(fwd, PortForward{HostPort: ports[i], GuestPort: g})
	}
	out, err := os.Create(s.OutputLog)
	if err != nil {
		return nil, err
	}
	// The VM lives until Stop; the context is how Stop kills it when the
	// guest does not power off by itself.
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	m := Machine{
		Kernel: k, Initramfs: initrd, ConsoleLog: s.ConsoleLog, MemoryMiB: cfg.MemoryMiB, Forward: fwd,
		GuestForward: cfg.GuestForward, Disk: disk, ReadOnlyDisks: cfg.ReadOnlyDisks,
		OnLine: func(line string) {
			fmt.Fprintln(out, line)
			if cfg.OnLine != nil {
				cfg.OnLine(line)
			}
			s.mu.Lock()
			s.lines = append(s.lines, line)
			close(s.changed)
			s.changed = make(chan struct{})
			s.mu.Unlock()
		},
	}
	s.proc, err = m.start(ctx, true)
	if err != nil {
		cancel()
		out.Close()
		return nil, err
	}
	go func() {
		<-s.proc.done
		out.Close()
		s.mu.Lock()
		s.exited = true
		close(s.changed)
		s.mu.Unlock()
	}()
	return s, nil
}

// HostAddr is the host address ("127.0.0.1:NNNN") forwarded to guestPort,
// which must be one of ServiceConfig.Forward.
func (s *Service) HostAddr(guestPort int) string {
	p, ok := s.hostFwd[guestPort]
	if !ok {
		panic(fmt.Sprintf("vm: guest port %d is not forwarded (ServiceConfig.Forward)", guestPort))
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}

// WaitLine returns the first output line since boot that contains substr,
// waiting for it until ctx ends or the VM exits.
func (s *Service) WaitLine(ctx context.Context, substr string) (string, error) {
	for next := 0; ; {
		s.mu.Lock()
		for ; next < len(s.lines); next++ {
			if strings.Contains(s.lines[next], substr) {
				line := s.lines[next]
				s.mu.Unlock()
				return line, nil
			}
		}
		changed, exited := s.changed, s.exited
		s.mu.Unlock()
		if exited {
			return "", fmt.Errorf("the VM exited without printing %q", substr)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for %q: %w", substr, ctx.Err())
		}
	}
}

// Exited is closed when qemu has exited: after Stop, or earlier if the VM
// died (kernel panic, a failed guest script).
func (s *Service) Exited() <-chan struct{} {
	return s.proc.done
}

// Lines returns the output lines so far.
func (s *Service) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// Stop asks the guest to power off and kills qemu if it has not within
// serviceStopGrace. It returns when qemu is gone; calling it again does
// nothing.
func (s *Service) Stop() {
	s.stopOnce.Do(func() {
		close(s.stopped)
		// The guest's run.sh reads this from ttyS1 (qemu's stdin) and
		// exits; init then powers off. If qemu is gone the write fails,
		// which is fine.
		_, _ = io.WriteString(s.proc.input, serviceStopLine+"\n")
		timer := time.NewTimer(serviceStopGrace)
		defer timer.Stop()
		select {
		case <-s.proc.done:
		case <-timer.C:
			s.t.Logf("service VM did not power off within %v of the stop request; killing qemu", serviceStopGrace)
		}
		s.cancel()
		<-s.proc.done
	})
}

// cleanup stops the VM at the end of the test, and reports a VM that went
// away on its own while the test ran (a guest script or kernel failure the
// test might only see as refused connections).
func (s *Service) cleanup() {
	t := s.t
	select {
	case <-s.stopped:
		// The test stopped it: qemu exiting was expected.
	default:
		select {
		case <-s.proc.done:
			t.Errorf("the service VM exited while the test ran (%s)", s.exitInfo())
		default:
		}
	}
	s.Stop()
	if t.Failed() {
		t.Logf("service VM:\n%s", s.report())
	}
}

// exitInfo says how the VM ended, once it has.
func (s *Service) exitInfo() string {
	res, err := s.proc.wait()
	switch {
	case res.ExitCode == 125:
		return "guest setup failed: " + res.Setup
	case err != nil:
		return err.Error()
	default:
		return fmt.Sprintf("guest script exited %d", res.ExitCode)
	}
}

// report is the VM's output and console tail, for a failure message.
func (s *Service) report() string {
	lines := s.Lines()
	const keep = 200
	head := fmt.Sprintf("--- service VM output (%d lines, in %s) ---", len(lines), s.OutputLog)
	if len(lines) > keep {
		head = fmt.Sprintf("--- service VM output (last %d of %d lines, all in %s) ---", keep, len(lines), s.OutputLog)
		lines = lines[len(lines)-keep:]
	}
	stderr := ""
	if e := strings.TrimSpace(s.proc.stderr.String()); e != "" {
		stderr = "\n--- qemu stderr ---\n" + e
	}
	return fmt.Sprintf("%s\n%s%s\n--- kernel console (last 60 lines, all in %s) ---\n%s",
		head, strings.Join(lines, "\n"), stderr, s.ConsoleLog, ConsoleTail(s.ConsoleLog, 60))
}

// forwards describes the port forwards for the log.
func (s *Service) forwards() string {
	var guestFwd []string
	for _, f := range s.guestFwd {
		guestFwd = append(guestFwd, fmt.Sprintf("guest %s -> 127.0.0.1:%d", f.GuestAddr, f.HostPort))
	}
	if len(s.hostFwd) == 0 && len(guestFwd) == 0 {
		return "no network"
	}
	guests := make([]int, 0, len(s.hostFwd))
	for g := range s.hostFwd {
		guests = append(guests, g)
	}
	sort.Ints(guests)
	parts := make([]string, len(guests))
	for i, g := range guests {
		parts[i] = fmt.Sprintf("%s -> guest %s:%d", s.HostAddr(g), GuestIP, g)
	}
	return "forwarding " + strings.Join(append(parts, guestFwd...), ", ")
}

// crashedWhileBooting returns the console's Oops or panic line when the
// kernel died before the guest printed anything (lines is how many output
// lines it printed), "" otherwise.
func crashedWhileBooting(lines int, console string) string {
	if lines > 0 {
		return ""
	}
	for _, l := range strings.Split(console, "\n") {
		if strings.Contains(l, "Oops:") || strings.Contains(l, "Kernel panic") {
			return strings.TrimSpace(l)
		}
	}
	return ""
}
