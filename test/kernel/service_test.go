//go:build !vmguest

package kernel

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/test/vm"
)

// TestServiceVM boots a service VM (test/vm.StartService) the way the
// Kubernetes e2e test does, with toy services instead of storage agents: a
// line-echo server of ours (testdata/svcecho, a Command) on one forwarded
// port and busybox httpd serving a host file (Files) on another. It proves
// the forwards carry bytes both ways, that service output reaches WaitLine,
// and that Stop powers the VM off. It boots both kernels, one after the
// other: they load the NIC's modules differently (6.12 builds virtio_pci
// in). It lives here rather than in test/vm so that it runs with the other
// boots in `make test-kernel`, not beside the race-enabled unit tests.
func TestServiceVM(t *testing.T) {
	if p := os.Getenv(vm.EnvRun); p != "" {
		// Someone is working on a guest scenario: do not add boots.
		t.Skipf("%s=%q picks guest tests; this host test runs none of them", vm.EnvRun, p)
	}
	for _, k := range []struct{ name, dir string }{{"default", ""}, {"auth", vm.AuthKernelDir}} {
		t.Run(k.name, func(t *testing.T) { testServiceVM(t, k.dir) })
	}
}

func testServiceVM(t *testing.T, kernelDir string) {
	dir := t.TempDir()
	page := filepath.Join(dir, "index.html")
	const pageText = "a file from the host, served by the guest\n"
	if err := os.WriteFile(page, []byte(pageText), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s := vm.StartService(t, vm.ServiceConfig{
		KernelDir: kernelDir,
		Commands:  []string{"./test/kernel/testdata/svcecho"},
		Files:     map[string]string{"/nvmirror/www/index.html": page},
		Script: `svcecho --listen=:7000 &
httpd -p 8080 -h /nvmirror/www
# Ready once both listen: the host connects right after the ready line.
n=0
until netstat -ltn | grep -q ':7000 ' && netstat -ltn | grep -q ':8080 '; do
	n=$((n+1)); [ $n -le 100 ] || { netstat -ltn; exit 1; }
	sleep 0.1
done
echo "toy services up"`,
		Forward:   []int{7000, 8080},
		MemoryMiB: 1024,
		ReadyLine: "toy services up",
	})
	t.Logf("boot to ready: %v", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if _, err := s.WaitLine(ctx, "svcecho listening on"); err != nil {
		t.Errorf("the service's own output: %v", err)
	}

	for i := range 2 { // the forward carries every connection, not only the first
		msg := fmt.Sprintf("hello %d from the host", i)
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", s.HostAddr(7000))
		if err != nil {
			t.Fatalf("dial %s: %v", s.HostAddr(7000), err)
		}
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(conn, msg+"\n"); err != nil {
			t.Fatal(err)
		}
		reply, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if err != nil {
			t.Fatalf("reading the echo: %v (got %q)", err, reply)
		}
		if want := fmt.Sprintf("kernel %s echoes: %s\n", s.Kernel.Version, msg); reply != want {
			t.Errorf("echo = %q, want %q", reply, want)
		}
		if _, err := s.WaitLine(ctx, "served: "+msg); err != nil {
			t.Errorf("service output: %v", err)
		}
	}

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.HostAddr(8080)+"/index.html", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != pageText {
		t.Errorf("GET index.html: %v %s %q, want 200 %q", err, resp.Status, body, pageText)
	}

	stop := time.Now()
	s.Stop()
	t.Logf("stop (guest power-off): %v", time.Since(stop).Round(time.Millisecond))
	select {
	case <-s.Exited():
	default:
		t.Error("qemu still running after Stop")
	}
	s.Stop() // idempotent
	if !strings.Contains(strings.Join(s.Lines(), "\n"), "toy services up") {
		t.Error("Lines lost the ready line")
	}
	if _, err := net.DialTimeout("tcp", s.HostAddr(7000), time.Second); err == nil {
		t.Error("the forwarded port still accepts connections after Stop")
	}
}
