package vm

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestDeviceModules checks the NIC's and the scratch disk's modules against
// both kernels the tests boot (when unpacked here): Debian 6.1 builds the
// virtio PCI transport as a module, 6.12 builds it in, and every module
// named must resolve in modules.dep.
func TestDeviceModules(t *testing.T) {
	for _, tc := range []struct {
		dir     string
		modules func(Kernel) ([]string, error)
		name    string
		want    []string
	}{
		{".cache/vm/kernel", NetModules, "NetModules", []string{"virtio_pci", "virtio_net"}},
		{AuthKernelDir, NetModules, "NetModules", []string{"virtio_net"}},
		{".cache/vm/kernel", DiskModules, "DiskModules", []string{"virtio_pci", "virtio_blk"}},
		{AuthKernelDir, DiskModules, "DiskModules", []string{"virtio_blk"}},
	} {
		t.Run(tc.name+"/"+filepath.Base(tc.dir), func(t *testing.T) {
			k, err := KernelFromDir(tc.dir)
			if err != nil {
				t.Skipf("kernel not unpacked: %v", err)
			}
			got, err := tc.modules(k)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s(%s) = %v, want %v", tc.name, k.Version, got, tc.want)
			}
			f, err := os.Open(filepath.Join(k.ModulesDir, "modules.dep"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			md, err := parseModulesDep(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := md.loadOrder(got); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestNetModulesBuiltinSkipped(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/net/virtio_net.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := NetModules(Kernel{ModulesDir: dir})
	if err != nil || len(got) != 0 {
		t.Errorf("NetModules with both built in = %v, %v; want none", got, err)
	}
}

func TestFreePortsDistinct(t *testing.T) {
	ports, err := freePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Errorf("ports %v: bad or repeated %d", ports, p)
		}
		seen[p] = true
	}
}
