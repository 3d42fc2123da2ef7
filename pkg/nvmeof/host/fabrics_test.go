package host

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

// fakeFabrics stands in for /dev/nvme-fabrics. onWrite decides the answer
// (and usually creates the controller's sysfs tree); block, when set, makes
// Write wait until it is closed, like a connect to an unresponsive target.
type fakeFabrics struct {
	mu      sync.Mutex
	writes  []string
	options string
	optErr  error
	onWrite func(options string) (string, error)
	block   chan struct{}
	entered chan struct{}
}

func (f *fakeFabrics) Write(options string) (string, error) {
	f.mu.Lock()
	f.writes = append(f.writes, options)
	on, block, entered := f.onWrite, f.block, f.entered
	f.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if block != nil {
		<-block
	}
	if on == nil {
		return "", fmt.Errorf("writing to fake nvme-fabrics: %w", syscall.ENODEV)
	}
	return on(options)
}

func (f *fakeFabrics) ReadOptions() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.options, f.optErr
}

func (f *fakeFabrics) Writes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.writes)
}

// kernelOptions61 is what Debian 6.1's /dev/nvme-fabrics lists.
const kernelOptions61 = "instance=-1,cntlid=-1,transport=%s,traddr=%s,trsvcid=%s,nqn=%s,queue_size=%d,nr_io_queues=%d," +
	"reconnect_delay=%d,ctrl_loss_tmo=%d,keep_alive_tmo=%d,hostnqn=%s,host_traddr=%s,host_iface=%s,hostid=%s," +
	"duplicate_connect,disable_sqflow,hdr_digest,data_digest,nr_write_queues=%d,nr_poll_queues=%d,tos=%d," +
	"fast_io_fail_tmo=%d,discovery,dhchap_secret=%s,dhchap_ctrl_secret=%s\n"

func TestParseConnectResult(t *testing.T) {
	tests := []struct {
		in           string
		inst, cntlid int
		ok           bool
	}{
		{"instance=3,cntlid=1\n", 3, 1, true},
		{"instance=0,cntlid=65535", 0, 65535, true},
		{"cntlid=2,instance=12\n", 12, 2, true},
		{"instance=7", 7, -1, true},
		{"", -1, -1, false},
		{"instance=-1,cntlid=-1,transport=%s", -1, -1, false},
		{"instance=x,cntlid=1", -1, -1, false},
	}
	for _, tc := range tests {
		inst, cntlid, err := parseConnectResult(tc.in)
		if (err == nil) != tc.ok || inst != tc.inst || (tc.ok && cntlid != tc.cntlid) {
			t.Errorf("parseConnectResult(%q) = %d, %d, %v; want %d, %d, ok=%v", tc.in, inst, cntlid, err, tc.inst, tc.cntlid, tc.ok)
		}
	}
}

func TestParseOptionNames(t *testing.T) {
	names := parseOptionNames(kernelOptions61)
	for _, want := range []string{"transport", "traddr", "trsvcid", "nqn", "hostnqn", "hostid", "ctrl_loss_tmo",
		"reconnect_delay", "fast_io_fail_tmo", "keep_alive_tmo", "nr_io_queues", "duplicate_connect", "discovery"} {
		if !slices.Contains(names, want) {
			t.Errorf("option %s missing from %v", want, names)
		}
	}
	for _, bad := range []string{"instance", "cntlid", ""} {
		if slices.Contains(names, bad) {
			t.Errorf("placeholder %q listed as an option", bad)
		}
	}
	if got := parseOptionNames("instance=-1,cntlid=-1,transport=%s,transport=%s\n"); !slices.Equal(got, []string{"transport"}) {
		t.Errorf("duplicates not removed: %v", got)
	}
	if got := parseOptionNames(""); len(got) != 0 {
		t.Errorf("empty list parsed as %v", got)
	}
}

func TestIsConnectionErrno(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{syscall.EIO, true},
		{fmt.Errorf("write /dev/nvme-fabrics: %w", syscall.ECONNREFUSED), true},
		{&os.PathError{Op: "write", Path: "/dev/nvme-fabrics", Err: syscall.EPERM}, true},
		{syscall.EACCES, true},
		{syscall.ECONNRESET, true},
		{syscall.ETIMEDOUT, true},
		{syscall.EHOSTUNREACH, true},
		{syscall.EINVAL, false},
		{syscall.EALREADY, false},
		{errors.New("other"), false},
	}
	for _, tc := range tests {
		if got := isConnectionErrno(tc.err); got != tc.want {
			t.Errorf("isConnectionErrno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestDevFabrics(t *testing.T) {
	dir := t.TempDir()
	missing := devFabrics{path: filepath.Join(dir, "nvme-fabrics")}
	if _, err := missing.Write("transport=tcp"); !errors.Is(err, nvmeof.ErrNotFound) {
		t.Errorf("Write on missing device = %v, want nvmeof.ErrNotFound", err)
	}
	if _, err := missing.ReadOptions(); !errors.Is(err, nvmeof.ErrNotFound) {
		t.Errorf("ReadOptions on missing device = %v, want nvmeof.ErrNotFound", err)
	}

	// A regular file stands in for the read side of the device.
	p := filepath.Join(dir, "list")
	if err := os.WriteFile(p, []byte(kernelOptions61), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := devFabrics{path: p}.ReadOptions()
	if err != nil || got != kernelOptions61 {
		t.Fatalf("ReadOptions = %q, %v", got, err)
	}
	// Write must not create or truncate anything.
	ro := filepath.Join(dir, "ro")
	if err := os.WriteFile(ro, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		if _, err := (devFabrics{path: ro}).Write("transport=tcp"); err == nil {
			t.Errorf("Write to a read-only file succeeded")
		}
	}
}

func TestSupportedOptionsFallsBackToDeviceFile(t *testing.T) {
	tree := newSysTree(t)
	// A Fabrics without ReadOptions: SupportedOptions reads root/dev/nvme-fabrics.
	in := NewInitiatorWithFabrics(tree.root, writeOnlyFabrics{})
	if _, err := in.SupportedOptions(); !errors.Is(err, nvmeof.ErrNotFound) {
		t.Fatalf("SupportedOptions without device = %v, want nvmeof.ErrNotFound", err)
	}
	tree.write("dev/nvme-fabrics", kernelOptions61)
	names, err := in.SupportedOptions()
	if err != nil || !slices.Contains(names, "fast_io_fail_tmo") {
		t.Fatalf("SupportedOptions = %v, %v", names, err)
	}
	tree.write("dev/nvme-fabrics", "\n")
	if _, err := in.SupportedOptions(); err == nil {
		t.Fatalf("SupportedOptions of an empty list succeeded")
	}
}

type writeOnlyFabrics struct{}

func (writeOnlyFabrics) Write(string) (string, error) { return "", syscall.ENODEV }
