package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestServiceNetworkAndDisks boots a service VM with each way in and out
// of it a test has: a guest forward to a host server, a fixed forward from a
// chosen host port to the same guest port, and a read-only image disk
// beside a blank scratch disk. Its first boot fails the ready check on
// purpose: the VM is booted again, once, with its forwards, and the first
// boot's logs are kept.
func TestServiceNetworkAndDisks(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "from-the-host") })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	hostPort := l.Addr().(*net.TCPAddr).Port

	// The read-only disk: an ext4 image holding one file.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello"), []byte("on-the-disk"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "ro.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", dir, img, "8M").CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4 -d: %v: %s", err, out)
	}
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	fixed := ports[0]
	checks := 0
	s := StartService(t, ServiceConfig{
		GuestForward:  []GuestForward{{GuestAddr: "10.0.2.100:6443", HostPort: hostPort}},
		FixedForward:  []PortForward{{HostPort: fixed, GuestPort: fixed}},
		DiskMiB:       64,
		ReadOnlyDisks: []string{img},
		Script: fmt.Sprintf(`set -e
for i in 1 2; do echo "fetched $(wget -qO- http://10.0.2.100:6443/)"; done
mkdir /ro && mount -o ro /dev/vdb /ro && echo "disk says $(cat /ro/hello)"
echo "scratch is $(cat /sys/block/vda/size) sectors"
nc -l -p %d -e echo from-the-guest &
echo listening`, fixed),
		ReadyLine: "listening",
		ReadyCheck: func(context.Context) error {
			checks++
			if checks == 1 {
				return errors.New("the test fails the first boot's check on purpose")
			}
			return nil
		},
	})
	if checks != 2 || len(s.EarlierLogs) != 2 {
		t.Errorf("ready checks %d, earlier boots' logs %v: want 2 checks and the first boot's 2 logs", checks, s.EarlierLogs)
	} else if b, err := os.ReadFile(s.EarlierLogs[1]); err != nil || !strings.Contains(string(b), "listening") {
		t.Errorf("the first boot's output log %s: %v, %q", s.EarlierLogs[1], err, b)
	}
	out := strings.Join(s.Lines(), "\n")
	for _, want := range []string{"fetched from-the-host\nfetched from-the-host", "disk says on-the-disk", "scratch is 131072 sectors"} {
		if !strings.Contains(out, want) {
			t.Errorf("the guest did not print %q:\n%s", want, out)
		}
	}
	if got := s.HostAddr(fixed); got != fmt.Sprintf("127.0.0.1:%d", fixed) {
		t.Errorf("HostAddr(%d) = %s", fixed, got)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.HostAddr(fixed), 5*time.Second)
		if err == nil {
			b, _ := io.ReadAll(c)
			c.Close()
			if strings.TrimSpace(string(b)) == "from-the-guest" {
				break
			}
			err = fmt.Errorf("read %q", b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("host port %d to the guest: %v", fixed, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A boot that failed its ready check keeps its logs beside the next boot's,
// whichever way logPath named them.
func TestKeepLogs(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ console, output, wantConsole, wantOutput string }{
		{"TestX_sub.console.log", "TestX_sub.service.log", "TestX_sub.boot1.console.log", "TestX_sub.boot1.service.log"},
		{"console.log", "service.log", "boot1.console.log", "boot1.service.log"},
	} {
		s := &Service{t: t, ConsoleLog: filepath.Join(dir, c.console), OutputLog: filepath.Join(dir, c.output)}
		for _, p := range []string{s.ConsoleLog, s.OutputLog} {
			if err := os.WriteFile(p, []byte(filepath.Base(p)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		kept := s.keepLogs(1)
		want := []string{filepath.Join(dir, c.wantConsole), filepath.Join(dir, c.wantOutput)}
		if !slices.Equal(kept, want) {
			t.Errorf("keepLogs(1) of %s = %v, want %v", c.console, kept, want)
			continue
		}
		for i, p := range []string{c.console, c.output} {
			if b, err := os.ReadFile(kept[i]); err != nil || string(b) != p {
				t.Errorf("%s holds %q (%v), want the old %s", kept[i], b, err, p)
			}
			if _, err := os.Stat(filepath.Join(dir, p)); !os.IsNotExist(err) {
				t.Errorf("%s still there (%v): the next boot would append to it", p, err)
			}
		}
	}
}
