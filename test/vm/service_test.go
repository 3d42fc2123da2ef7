package vm

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServiceNetworkAndDisks boots a service VM with each way in and out
// of it a test has: a guest forward to a host server, a fixed forward from a
// chosen host port to the same guest port, and a read-only image disk
// beside a blank scratch disk.
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
	})
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
