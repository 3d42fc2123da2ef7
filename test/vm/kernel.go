package vm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Kernel is a bootable kernel image with its module tree.
type Kernel struct {
	Version    string // e.g. "6.1.0-56-amd64"
	Image      string // path of vmlinuz
	ModulesDir string // path of lib/modules/<Version>, holding modules.dep
}

// ErrNoKernel means no usable kernel was found; tests skip on it.
var ErrNoKernel = errors.New("no kernel for the test VM")

// EnvKernelDir names a directory laid out like an unpacked Debian
// linux-image package (boot/vmlinuz-V and lib/modules/V with modules.dep). It
// selects the kernel explicitly, e.g. the 6.12 backports kernel.
const EnvKernelDir = "NVMIRROR_VM_KERNEL_DIR"

// FindKernel returns the kernel the VM boots: the one in $NVMIRROR_VM_KERNEL_DIR
// if set, else the one `make vm-kernel` unpacked under <repo>/.cache/vm/kernel,
// else the host's own /boot and /lib/modules (a Debian host with
// linux-image-amd64 installed).
func FindKernel() (Kernel, error) {
	var roots []string
	if dir := os.Getenv(EnvKernelDir); dir != "" {
		k, err := kernelIn(dir)
		if err != nil {
			return Kernel{}, fmt.Errorf("%s=%s: %w", EnvKernelDir, dir, err)
		}
		return k, nil
	}
	if repo, err := RepoRoot(); err == nil {
		roots = append(roots, filepath.Join(repo, ".cache", "vm", "kernel"))
	}
	roots = append(roots, "/")
	var tried []string
	for _, r := range roots {
		k, err := kernelIn(r)
		if err == nil {
			return k, nil
		}
		tried = append(tried, err.Error())
	}
	return Kernel{}, fmt.Errorf("%w (run `make vm-deps`): %s", ErrNoKernel, strings.Join(tried, "; "))
}

// AuthKernelDir is where `make vm-kernel-auth` unpacks the 6.12
// bookworm-backports kernel, relative to the repo root: Debian 6.1 is built
// without NVMe in-band authentication (DH-HMAC-CHAP), this one has it.
const AuthKernelDir = ".cache/vm/kernel-auth"

// kernelMakeTargets names the make target that fills each known kernel
// directory, so a missing kernel is reported with the command that fixes it.
var kernelMakeTargets = map[string]string{
	".cache/vm/kernel": "make vm-kernel",
	AuthKernelDir:      "make vm-kernel-auth",
}

// KernelFromDir returns the kernel unpacked in dir, a directory laid out like
// .cache/vm/kernel (boot/vmlinuz-V, lib/modules/V/modules.dep); a relative
// dir is taken from the repo root. $NVMIRROR_VM_KERNEL_DIR does not apply:
// it overrides the default kernel only, so a boot that names its kernel
// (the NVMe-auth tests) gets that kernel or nothing.
func KernelFromDir(dir string) (Kernel, error) {
	abs := dir
	if !filepath.IsAbs(dir) {
		repo, err := RepoRoot()
		if err != nil {
			return Kernel{}, err
		}
		abs = filepath.Join(repo, dir)
	}
	k, err := kernelIn(abs)
	if err != nil {
		hint := "unpack a Debian linux-image package there"
		if target, ok := kernelMakeTargets[filepath.Clean(dir)]; ok {
			hint = "run `" + target + "`"
		}
		return Kernel{}, fmt.Errorf("%w in %s (%s): %v", ErrNoKernel, dir, hint, err)
	}
	return k, nil
}

// findKernelFor is FindKernel for dir "" and KernelFromDir otherwise.
func findKernelFor(dir string) (Kernel, error) {
	if dir == "" {
		return FindKernel()
	}
	return KernelFromDir(dir)
}

// kernelIn finds the newest kernel under root whose modules were indexed by
// depmod: an image without modules.dep cannot load md or nvmet.
func kernelIn(root string) (Kernel, error) {
	images, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	sort.Sort(sort.Reverse(sort.StringSlice(images)))
	for _, img := range images {
		ver := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		mods := filepath.Join(root, "lib", "modules", ver)
		if _, err := os.Stat(filepath.Join(mods, "modules.dep")); err != nil {
			continue
		}
		if f, err := os.Open(img); err != nil {
			// Debian installs vmlinuz mode 0600; a non-root user cannot boot it.
			continue
		} else {
			f.Close()
		}
		return Kernel{Version: ver, Image: img, ModulesDir: mods}, nil
	}
	return Kernel{}, fmt.Errorf("no readable boot/vmlinuz-* with lib/modules/<version>/modules.dep under %s", root)
}

// RepoRoot is the directory holding the module's go.mod, found from the
// working directory upward (go test runs in the package directory).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/nvmirror/nvmirror\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the nvmirror module")
		}
		dir = parent
	}
}
