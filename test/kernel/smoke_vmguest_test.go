//go:build vmguest

package kernel

import (
	"os"
	"testing"
)

func TestKernelInterfaces(t *testing.T) {
	for _, p := range []string{"/proc/mdstat", "/dev/nvme-fabrics", "/sys/kernel/config/nvmet/subsystems", "/sys/class/nvme-subsystem"} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}
