//go:build vmguest

package kernel

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAuthKernelBoots checks that the auth boot (TestRealKernelAuth) really
// runs a kernel with NVMe in-band authentication on both sides: the host's
// fabrics options include the DH-HMAC-CHAP secrets, and nvmet hosts have a
// dhchap_key attribute. Debian 6.1 has neither, which is why these tests get
// a kernel of their own.
func TestAuthKernelBoots(t *testing.T) {
	b, err := os.ReadFile("/dev/nvme-fabrics")
	if err != nil {
		t.Fatal(err)
	}
	opts := map[string]bool{}
	for _, o := range strings.Split(strings.TrimSpace(string(b)), ",") {
		name, _, _ := strings.Cut(o, "=")
		opts[name] = true
	}
	for _, want := range []string{"dhchap_secret", "dhchap_ctrl_secret"} {
		if !opts[want] {
			t.Errorf("/dev/nvme-fabrics has no %s option (kernel built without CONFIG_NVME_AUTH?): %s", want, b)
		}
	}

	host := filepath.Join("/sys/kernel/config/nvmet/hosts", "nqn.2014-08.org.nvmexpress:uuid:authboot")
	if err := os.Mkdir(host, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(host)
	if _, err := os.Stat(filepath.Join(host, "dhchap_key")); err != nil {
		t.Errorf("nvmet host has no dhchap_key (kernel built without CONFIG_NVME_TARGET_AUTH?): %v", err)
	}
}
