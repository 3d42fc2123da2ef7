package vm

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Image describes the initramfs of one VM boot.
type Image struct {
	Kernel Kernel
	// Modules are loaded with insmod, with their dependencies first; a
	// failure to load one fails the boot.
	Modules []string
	// OptionalModules are loaded when the kernel has them, failures ignored
	// (e.g. a CPU-specific crc32c implementation that TCG's CPU may lack).
	OptionalModules []string
	// Tools are host executables copied to the same path in the guest with
	// the shared libraries ldd lists for them.
	Tools []string
	// Files maps a guest path to a host file copied there (mode kept).
	Files map[string]string
	// Script runs as root after the base system is up; its stdout and stderr
	// are the VM's result stream, and its exit status the result.
	Script string
	// Network brings up eth0 as 10.0.2.15/24 for qemu's user-mode network
	// (see ServiceConfig); Modules must then include NetModules.
	Network bool
	// Disk makes /init wait for the VM's virtio disk (Machine.Disk) before
	// the tests start; Modules must then include DiskModules.
	Disk bool
}

// DataPathModules are what the nvmirror data path needs: md RAID1, the
// NVMe/TCP host and target, loop devices, and the filesystems we format.
var DataPathModules = []string{
	"configfs", "md_mod", "raid1", "nvme_core", "nvme_fabrics", "nvme_tcp",
	"nvmet", "nvmet_tcp", "loop", "ext4", "xfs",
}

// DataPathOptionalModules load first when present: ext4 and xfs need a crc32c
// implementation that nothing loads for them without modprobe's softdeps.
// NVMe in-band authentication (DH-HMAC-CHAP) allocates its DH groups by
// name ("ffdhe2048(dh)"), which needs modprobe when CONFIG_CRYPTO_DH is a
// module (dh_generic); the 6.12 backports kernel builds DH, the RFC 7919
// groups, HMAC and SHA-2 in. Its nvme_auth and nvme_keyring are not listed:
// modules.dep makes them dependencies of nvme_core, nvme_fabrics and nvmet,
// so they load with DataPathModules, and listing them here too would
// insmod them twice (the second, required, load fails with EEXIST).
var DataPathOptionalModules = []string{"crc32c_generic", "crc32c_intel", "dh_generic"}

// DataPathTools are the userspace programs the nvmirror data path runs.
var DataPathTools = []string{
	"/usr/sbin/mdadm", "/usr/sbin/mkfs.ext4", "/usr/sbin/mke2fs", "/usr/sbin/e2fsck",
	"/usr/sbin/resize2fs", "/usr/sbin/mkfs.xfs", "/usr/sbin/xfs_growfs", "/usr/sbin/blkid",
	// util-linux's mount tools: k8s.io/mount-utils parses their output and
	// errors, which busybox's applets word differently.
	"/usr/bin/mount", "/usr/bin/umount", "/usr/bin/findmnt",
}

// busyboxPaths are where Debian's busybox-static lives; the dynamic busybox
// package cannot run without its libraries, so only the static one is used.
var busyboxPaths = []string{"/bin/busybox", "/usr/bin/busybox"}

func findBusybox() (string, error) {
	for _, p := range busyboxPaths {
		if isStatic(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("no static busybox at %v (install busybox-static: `make vm-deps`)", busyboxPaths)
}

// isStatic reports whether an ELF file has no program interpreter, i.e. runs
// without a dynamic loader or libraries.
func isStatic(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)`)

// sharedLibs lists the libraries (and the dynamic loader) a host binary needs.
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %v: %s", bin, err, out)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("ldd %s: %s", bin, strings.TrimSpace(line))
		}
		if m := lddLine.FindStringSubmatch(line); m != nil {
			libs = append(libs, m[1])
		}
	}
	return libs, nil
}

// Build writes the gzip-compressed initramfs to dst.
func (img Image) Build(dst string) error {
	entries := map[string]cpioEntry{}
	addDirs := func(p string) {
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			n := strings.TrimPrefix(d, "/")
			if _, ok := entries[n]; !ok {
				entries[n] = cpioEntry{name: n, mode: modeDir | 0o755}
			}
		}
	}
	addFile := func(guest string, data []byte, perm os.FileMode) {
		addDirs(guest)
		n := strings.TrimPrefix(guest, "/")
		entries[n] = cpioEntry{name: n, mode: modeFile | uint32(perm.Perm()), data: data}
	}
	copyFile := func(guest, host string) error {
		data, err := os.ReadFile(host) // follows symlinks: the guest gets the real content
		if err != nil {
			return err
		}
		st, err := os.Stat(host)
		if err != nil {
			return err
		}
		addFile(guest, data, st.Mode())
		return nil
	}
	for _, d := range []string{"/bin", "/sbin", "/usr/bin", "/usr/sbin", "/proc", "/sys", "/dev", "/tmp", "/run", "/etc", "/var/lib", "/mnt"} {
		n := strings.TrimPrefix(d, "/")
		addDirs(d + "/x")
		entries[n] = cpioEntry{name: n, mode: modeDir | 0o755}
	}

	bb, err := findBusybox()
	if err != nil {
		return err
	}
	if err := copyFile("/bin/busybox", bb); err != nil {
		return err
	}

	for _, tool := range img.Tools {
		if err := copyFile(tool, tool); err != nil {
			return fmt.Errorf("tool %s: %w (install it: `make vm-deps`)", tool, err)
		}
		libs, err := sharedLibs(tool)
		if err != nil {
			return err
		}
		for _, lib := range libs {
			if err := copyFile(lib, lib); err != nil {
				return fmt.Errorf("library %s of %s: %w", lib, tool, err)
			}
		}
	}
	for guest, host := range img.Files {
		if err := copyFile(guest, host); err != nil {
			return fmt.Errorf("file %s: %w", host, err)
		}
	}

	// Modules: required ones in dependency order, optional ones best effort.
	depFile, err := os.Open(filepath.Join(img.Kernel.ModulesDir, "modules.dep"))
	if err != nil {
		return err
	}
	md, err := parseModulesDep(depFile)
	depFile.Close()
	if err != nil {
		return err
	}
	var optional []string
	for _, m := range img.OptionalModules {
		if order, err := md.loadOrder([]string{m}); err == nil {
			optional = append(optional, order...)
		}
	}
	required, err := md.loadOrder(img.Modules)
	if err != nil {
		return err
	}
	guestModule := func(rel string) (string, error) {
		host := filepath.Join(img.Kernel.ModulesDir, rel)
		data, err := os.ReadFile(host)
		if err != nil {
			return "", err
		}
		guest := "/lib/modules/" + strings.TrimSuffix(rel, ".xz")
		switch {
		case strings.HasSuffix(rel, ".xz"):
			// busybox insmod cannot decompress; the kernel may not either.
			out, err := exec.Command("xz", "-dc", host).Output()
			if err != nil {
				return "", fmt.Errorf("xz -dc %s: %w (install xz-utils)", host, err)
			}
			data = out
		case strings.HasSuffix(rel, ".zst") || strings.HasSuffix(rel, ".gz"):
			return "", fmt.Errorf("module %s: unsupported compression", rel)
		}
		if _, done := entries[strings.TrimPrefix(guest, "/")]; !done {
			addFile(guest, data, 0o644)
		}
		return guest, nil
	}
	var script strings.Builder
	script.WriteString(initPrologue)
	for _, rel := range optional {
		g, err := guestModule(rel)
		if err != nil {
			return err
		}
		fmt.Fprintf(&script, "insmod %s 2>/dev/null || true\n", g)
	}
	for _, rel := range required {
		g, err := guestModule(rel)
		if err != nil {
			return err
		}
		fmt.Fprintf(&script, "loadmod %s\n", g)
	}
	if img.Network {
		script.WriteString(initNetwork)
	}
	if img.Disk {
		script.WriteString(initDisk)
	}
	script.WriteString(initSystem)
	addFile("/nvmirror/run.sh", []byte("#!/bin/sh\n"+img.Script+"\n"), 0o755)
	script.WriteString(initEpilogue)
	addFile("/init", []byte(script.String()), 0o755)

	list := make([]cpioEntry, 0, len(entries))
	for _, e := range entries {
		list = append(list, e)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].name < list[j].name })

	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err := writeCpio(gz, list); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	return os.WriteFile(dst, buf.Bytes(), 0o644)
}

// The guest's /init. Results go to the second serial port (ttyS1) in raw
// mode, framed by markers, so kernel messages on the console (ttyS0) never mix
// with them. Booting with panic=-1 and qemu -no-reboot turns a kernel panic
// into a qemu exit, which the host reports with the console's tail.
const initPrologue = `#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
stty -F /dev/ttyS1 raw -echo 2>/dev/null
fail() { echo "@@NVMIRROR-EXIT 125@@ $*" > /dev/ttyS1; sync; poweroff -f; }
loadmod() { insmod "$1" || fail "insmod $1 failed"; }
`

const initSystem = `mount -t configfs configfs /sys/kernel/config || fail "mount configfs failed"
ip link set lo up || fail "lo up failed"
hostname nvmirror-vm
mkdir -p /etc/nvme /etc/mdadm /run/mdadm
echo "AUTO -all" > /etc/mdadm/mdadm.conf
echo "@@NVMIRROR-READY@@" > /dev/ttyS1
`

const initEpilogue = `cd /nvmirror
NVMIRROR_VM=1 PATH=/nvmirror/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp TMPDIR=/tmp sh /nvmirror/run.sh > /dev/ttyS1 2>&1
rc=$?
sync
echo "@@NVMIRROR-EXIT $rc@@" > /dev/ttyS1
poweroff -f
`
