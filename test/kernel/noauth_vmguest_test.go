//go:build vmguest

package kernel

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/dhchap"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
)

// TestKernelWithoutNVMeAuth runs on Debian's 6.1, built without NVMe
// in-band authentication: a connect with a secret is ErrAuthUnsupported
// naming the missing option and creates no controller, and the target
// reports ErrAuthUnsupported naming CONFIG_NVME_TARGET_AUTH. It also shows
// why the initiator cannot trust /dev/nvme-fabrics: 6.1 lists
// dhchap_secret among its options, and a raw write with one connects
// without authenticating.
func TestKernelWithoutNVMeAuth(t *testing.T) {
	ks, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(ks), " nvme_auth_negotiate") {
		t.Skip("this kernel has NVMe host authentication; the test is for kernels without it (the 6.1 boot)")
	}
	tgt := nvmet.NewTarget("")
	ini := host.NewInitiator("")
	hostIdent := newHostIdentity(t, 81)
	nodes := startStorageNodes(t, tgt, "noauth", 1, 16<<20, hostIdent, 81)
	n := nodes[0]
	secret, err := dhchap.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	// Target side.
	err = tgt.AuthSupported()
	if !errors.Is(err, nvmeof.ErrAuthUnsupported) || !strings.Contains(err.Error(), "CONFIG_NVME_TARGET_AUTH") {
		t.Fatalf("AuthSupported = %v, want ErrAuthUnsupported naming CONFIG_NVME_TARGET_AUTH", err)
	}
	t.Logf("target: %v", err)
	stranger := "nqn.2014-08.org.nvmexpress:uuid:6b1d8e3c-0000-4000-8000-000000000082"
	if err := tgt.SetHostAuth(stranger, nvmet.HostAuth{Secret: secret}); !errors.Is(err, nvmeof.ErrAuthUnsupported) {
		t.Errorf("SetHostAuth = %v, want ErrAuthUnsupported", err)
	}
	if _, err := os.Stat(filepath.Join(nvmet.DefaultRoot, "hosts", stranger)); !os.IsNotExist(err) {
		t.Errorf("SetHostAuth left a host entry behind: %v", err)
	}
	if _, err := tgt.HostAuth(hostIdent.nqn); !errors.Is(err, nvmeof.ErrAuthUnsupported) {
		t.Errorf("HostAuth = %v, want ErrAuthUnsupported", err)
	}

	// Host side: refused before anything is written.
	opts, err := ini.SupportedOptions()
	if err != nil {
		t.Fatal(err)
	}
	listed := strings.Contains(strings.Join(opts, " "), "dhchap_secret")
	t.Logf("/dev/nvme-fabrics lists dhchap_secret: %v", listed)
	o := n.connectOptions(hostIdent)
	o.DHCHAPSecret = secret
	_, err = ini.Connect(ctxTimeout(t, 30*time.Second), o)
	if !errors.Is(err, nvmeof.ErrAuthUnsupported) || !strings.Contains(err.Error(), "CONFIG_NVME_AUTH") {
		t.Fatalf("Connect with a secret = %v, want ErrAuthUnsupported naming CONFIG_NVME_AUTH", err)
	}
	if strings.Contains(err.Error(), secret[10:40]) {
		t.Fatalf("error shows the secret: %v", err)
	}
	t.Logf("host: %v", err)
	if cs, err := ini.ControllersFor(n.nqn); err != nil || len(cs) != 0 {
		t.Fatalf("controllers after the refused connect: %+v, %v", cs, err)
	}

	// Why: the kernel takes the option and connects without authenticating.
	if listed {
		name, err := rawFabricsWrite(rawOpts(n, hostIdent, ",dhchap_secret="+secret))
		if err != nil {
			t.Logf("6.1 refuses a raw connect with a secret: %v", err)
		} else {
			_, attrErr := os.Stat(filepath.Join("/sys/class/nvme", name, "dhchap_secret"))
			t.Logf("6.1 connected %s although asked to authenticate (dhchap_secret attribute: %v)", name, attrErr)
			if attrErr == nil {
				t.Errorf("%s has a dhchap_secret attribute on a kernel without host authentication", name)
			}
			if err := ini.DisconnectNQN(ctxTimeout(t, 30*time.Second), n.nqn); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Without a secret, everything works as before.
	c, err := ini.Connect(ctxTimeout(t, 30*time.Second), n.connectOptions(hostIdent))
	if err != nil {
		t.Fatalf("connect without a secret: %v", err)
	}
	if _, _, err := ini.ControllerSecrets(c.Name); !errors.Is(err, nvmeof.ErrAuthUnsupported) {
		t.Errorf("ControllerSecrets = %v, want ErrAuthUnsupported", err)
	}
	if err := ini.SetControllerSecrets(c.Name, secret, ""); !errors.Is(err, nvmeof.ErrAuthUnsupported) {
		t.Errorf("SetControllerSecrets = %v, want ErrAuthUnsupported", err)
	}
	if err := ini.DisconnectNQN(ctxTimeout(t, 30*time.Second), n.nqn); err != nil {
		t.Fatal(err)
	}
}
