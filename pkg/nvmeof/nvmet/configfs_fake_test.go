package nvmet

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

// fakeConfigFS emulates nvmet's configfs on a temp dir closely enough that
// ordering bugs show up in unit tests:
//   - mkdir of a subsystem, namespace, port or host creates its attribute
//     files and default groups; mkdir elsewhere is EPERM;
//   - attribute files cannot be created (ENOENT) and only known items take
//     writes; values are stored with the kernel's trailing newline;
//   - namespace device_path/device_uuid/device_nguid are EBUSY and
//     buffered_io EINVAL while enabled; enable=1 needs an existing
//     device_path (ENOENT) and, with requireBufferedIO (tmpfs), buffered_io=1
//     (EINVAL); revalidate_size needs an enabled namespace;
//   - attr_allow_any_host starts at 1, host links are EINVAL while it is 1,
//     and it cannot become 1 while hosts are linked; attr_serial is EINVAL
//     once the subsystem was "discovered" by a host;
//   - port addr_* writes are EACCES while subsystems are linked; linking a
//     subsystem to a port without trtype/traddr is EINVAL;
//   - symlink targets must be absolute existing items; rmdir is ENOTEMPTY
//     with child items or links, EBUSY for a link target;
//   - with targetAuth (CONFIG_NVME_TARGET_AUTH), host entries have
//     dhchap_key, dhchap_ctrl_key (shown "" when unset), dhchap_hash
//     (default hmac(sha256)) and dhchap_dhgroup (default null). A key write
//     is checked like nvmet_auth_set_key does (only "DHHC-1:<hh>:" with hh
//     0-3; the key itself is parsed at connect time) and stored trimmed; a
//     write whose C string is empty (a single NUL) clears the key, while a
//     zero-length write never reaches the attribute (configfs: EFAULT);
//     hash and DH group must be known names, and with noDH the DH groups
//     are missing from the crypto API (EINVAL).
type fakeConfigFS struct {
	t    *testing.T
	root string

	mu                sync.Mutex
	requireBufferedIO bool                     // emulate a backing fs without O_DIRECT
	discovered        map[string]bool          // subsystems whose serial is frozen
	transportMissing  bool                     // linking to a port fails as without nvmet-tcp
	targetAuth        bool                     // kernel built with CONFIG_NVME_TARGET_AUTH
	noDH              bool                     // ffdhe groups missing from the crypto API
	failWrite         map[string]error         // attribute path -> injected error
	failSymlink       map[string]syscall.Errno // link path -> injected error
	// onSymlink, when set, runs before each symlink (another process
	// acting on the same kernel meanwhile).
	onSymlink func(target, link string)
	ops       []string
	serial    int
}

func newFakeConfigFS(t *testing.T) *fakeConfigFS {
	t.Helper()
	root := filepath.Join(t.TempDir(), "sys/kernel/config/nvmet")
	for _, d := range []string{"subsystems", "ports", "hosts"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &fakeConfigFS{t: t, root: root, discovered: map[string]bool{},
		failWrite: map[string]error{}, failSymlink: map[string]syscall.Errno{}}
}

func newFakeTarget(t *testing.T) (*Target, *fakeConfigFS) {
	f := newFakeConfigFS(t)
	return newTargetWithFS(f.root, f), f
}

var _ configFS = (*fakeConfigFS)(nil)

func perr(op, path string, e syscall.Errno) error { return &fs.PathError{Op: op, Path: path, Err: e} }

// kind classifies a path: "subsystem", "namespace", "allowed_host",
// "port", "port_subsystem", "host", "attr:<item kind>", or "".
func (f *fakeConfigFS) parts(path string) []string {
	rel, err := filepath.Rel(f.root, path)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return nil
	}
	return strings.Split(rel, string(filepath.Separator))
}

func itemKind(p []string) string {
	switch {
	case len(p) == 2 && p[0] == "subsystems":
		return "subsystem"
	case len(p) == 4 && p[0] == "subsystems" && p[2] == "namespaces":
		return "namespace"
	case len(p) == 4 && p[0] == "subsystems" && p[2] == "allowed_hosts":
		return "allowed_host"
	case len(p) == 2 && p[0] == "ports":
		return "port"
	case len(p) == 4 && p[0] == "ports" && p[2] == "subsystems":
		return "port_subsystem"
	case len(p) == 2 && p[0] == "hosts":
		return "host"
	}
	return ""
}

func (f *fakeConfigFS) record(format string, args ...any) {
	f.ops = append(f.ops, fmt.Sprintf(format, args...))
}

// Ops returns the mutating operations so far, paths relative to the root.
func (f *fakeConfigFS) Ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ops)
}

func (f *fakeConfigFS) rel(path string) string {
	r, err := filepath.Rel(f.root, path)
	if err != nil {
		return path
	}
	return r
}

func (f *fakeConfigFS) writeRaw(path, v string) error {
	return os.WriteFile(path, []byte(v+"\n"), 0o644)
}

func (f *fakeConfigFS) readRaw(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

func (f *fakeConfigFS) Mkdir(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.parts(path)
	kind := itemKind(p)
	if _, err := os.Lstat(filepath.Dir(path)); err != nil {
		return perr("mkdir", path, syscall.ENOENT)
	}
	if _, err := os.Lstat(path); err == nil {
		return perr("mkdir", path, syscall.EEXIST)
	}
	var attrs map[string]string
	var groups []string
	switch kind {
	case "subsystem":
		if p[1] == nvmeof.DiscoveryNQN {
			return perr("mkdir", path, syscall.EINVAL)
		}
		f.serial++
		attrs = map[string]string{"attr_allow_any_host": "1", "attr_serial": fmt.Sprintf("%016x", 0xabc000+f.serial),
			"attr_version": "1.3", "attr_model": "Linux", "attr_cntlid_min": "1", "attr_cntlid_max": "65519"}
		groups = []string{"namespaces", "allowed_hosts"}
	case "namespace":
		n, err := strconv.Atoi(p[3])
		if err != nil || n < 1 {
			return perr("mkdir", path, syscall.EINVAL)
		}
		attrs = map[string]string{"device_path": "(null)", "device_uuid": "0f0e0d0c-0b0a-4908-8706-050403020100",
			"device_nguid": "00000000-0000-0000-0000-000000000000", "enable": "0", "buffered_io": "0",
			"revalidate_size": "0", "ana_grpid": "1"}
	case "port":
		if _, err := strconv.ParseUint(p[1], 10, 16); err != nil {
			return perr("mkdir", path, syscall.EINVAL)
		}
		attrs = map[string]string{"addr_trtype": "", "addr_adrfam": "", "addr_traddr": "", "addr_trsvcid": "",
			"addr_treq": "not specified", "param_inline_data_size": "-1"}
		groups = []string{"subsystems", "referrals"}
	case "host":
		attrs = map[string]string{}
		if f.targetAuth {
			attrs = map[string]string{"dhchap_key": "", "dhchap_ctrl_key": "", "dhchap_hash": "hmac(sha256)", "dhchap_dhgroup": "null"}
		}
	default:
		return perr("mkdir", path, syscall.EPERM)
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		return err
	}
	for a, v := range attrs {
		if err := f.writeRaw(filepath.Join(path, a), v); err != nil {
			return err
		}
	}
	for _, g := range groups {
		if err := os.Mkdir(filepath.Join(path, g), 0o755); err != nil {
			return err
		}
	}
	f.record("mkdir %s", f.rel(path))
	return nil
}

func (f *fakeConfigFS) dirEmpty(path string) bool {
	es, _ := os.ReadDir(path)
	return len(es) == 0
}

// linkedFromPorts reports whether any port links subsystem nqn.
func (f *fakeConfigFS) linkedFromPorts(nqn string) bool {
	ports, _ := os.ReadDir(filepath.Join(f.root, "ports"))
	for _, p := range ports {
		if _, err := os.Lstat(filepath.Join(f.root, "ports", p.Name(), "subsystems", nqn)); err == nil {
			return true
		}
	}
	return false
}

func (f *fakeConfigFS) hostLinked(host string) bool {
	subs, _ := os.ReadDir(filepath.Join(f.root, "subsystems"))
	for _, s := range subs {
		if _, err := os.Lstat(filepath.Join(f.root, "subsystems", s.Name(), "allowed_hosts", host)); err == nil {
			return true
		}
	}
	return false
}

func (f *fakeConfigFS) Rmdir(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi, err := os.Lstat(path)
	if err != nil {
		return perr("rmdir", path, syscall.ENOENT)
	}
	if !fi.IsDir() {
		return perr("rmdir", path, syscall.ENOTDIR)
	}
	p := f.parts(path)
	switch itemKind(p) {
	case "subsystem":
		if !f.dirEmpty(filepath.Join(path, "namespaces")) || !f.dirEmpty(filepath.Join(path, "allowed_hosts")) {
			return perr("rmdir", path, syscall.ENOTEMPTY)
		}
		if f.linkedFromPorts(p[1]) {
			return perr("rmdir", path, syscall.EBUSY)
		}
	case "namespace":
		// The kernel disables the namespace on removal.
	case "port":
		if !f.dirEmpty(filepath.Join(path, "subsystems")) || !f.dirEmpty(filepath.Join(path, "referrals")) {
			return perr("rmdir", path, syscall.ENOTEMPTY)
		}
	case "host":
		if f.hostLinked(p[1]) {
			return perr("rmdir", path, syscall.EBUSY)
		}
	default:
		return perr("rmdir", path, syscall.EPERM)
	}
	if err := os.RemoveAll(path); err != nil {
		return err
	}
	f.record("rmdir %s", f.rel(path))
	return nil
}

func (f *fakeConfigFS) Symlink(target, link string) error {
	if f.onSymlink != nil {
		f.onSymlink(target, link)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !filepath.IsAbs(target) {
		// configfs would resolve it against the process's cwd.
		return &os.LinkError{Op: "symlink", Old: target, New: link, Err: syscall.EINVAL}
	}
	if e, ok := f.failSymlink[link]; ok {
		return &os.LinkError{Op: "symlink", Old: target, New: link, Err: e}
	}
	if _, err := os.Lstat(link); err == nil {
		return &os.LinkError{Op: "symlink", Old: target, New: link, Err: syscall.EEXIST}
	}
	p := f.parts(link)
	tp := f.parts(target)
	lerr := func(e syscall.Errno) error { return &os.LinkError{Op: "symlink", Old: target, New: link, Err: e} }
	switch itemKind(p) {
	case "allowed_host":
		if itemKind(tp) != "host" || tp[1] != p[3] {
			return lerr(syscall.EINVAL)
		}
		if _, err := os.Stat(target); err != nil {
			return lerr(syscall.ENOENT)
		}
		if parseBool(f.readRaw(filepath.Join(f.root, "subsystems", p[1], "attr_allow_any_host"))) {
			return lerr(syscall.EINVAL) // "can't add hosts when allow_any_host is set"
		}
	case "port_subsystem":
		if itemKind(tp) != "subsystem" || tp[1] != p[3] {
			return lerr(syscall.EINVAL)
		}
		if _, err := os.Stat(target); err != nil {
			return lerr(syscall.ENOENT)
		}
		port := filepath.Join(f.root, "ports", p[1])
		if f.readRaw(filepath.Join(port, "addr_trtype")) == "" || f.readRaw(filepath.Join(port, "addr_traddr")) == "" {
			return lerr(syscall.EINVAL)
		}
		if f.transportMissing {
			return lerr(syscall.EINVAL)
		}
	default:
		return lerr(syscall.EPERM)
	}
	if err := os.Symlink(target, link); err != nil {
		return err
	}
	f.record("symlink %s", f.rel(link))
	return nil
}

func (f *fakeConfigFS) Remove(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi, err := os.Lstat(path)
	if err != nil {
		return perr("unlink", path, syscall.ENOENT)
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		if fi.IsDir() {
			return perr("unlink", path, syscall.EISDIR)
		}
		return perr("unlink", path, syscall.EPERM)
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	f.record("unlink %s", f.rel(path))
	return nil
}

func (f *fakeConfigFS) WriteFile(path string, value []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi, err := os.Lstat(path)
	if err != nil {
		return perr("open", path, syscall.ENOENT) // attributes cannot be created
	}
	if fi.IsDir() {
		return perr("open", path, syscall.EISDIR)
	}
	if e, ok := f.failWrite[path]; ok {
		return e
	}
	if len(value) == 0 {
		// configfs never calls the attribute's store for a zero-length
		// write: fill_write_buffer copies nothing and answers EFAULT.
		return werrEarly(path, syscall.EFAULT)
	}
	v := strings.TrimRight(string(value), "\n")
	dir := filepath.Dir(path)
	attr := filepath.Base(path)
	p := f.parts(dir)
	werr := func(e syscall.Errno) error { return perr("write", path, e) }
	switch itemKind(p) {
	case "namespace":
		enabled := parseBool(f.readRaw(filepath.Join(dir, "enable")))
		switch attr {
		case "device_path", "device_uuid", "device_nguid":
			if enabled {
				return werr(syscall.EBUSY)
			}
			if attr == "device_uuid" {
				if !nvmeof.IsUUID(v) {
					return werr(syscall.EINVAL)
				}
				v = strings.ToLower(v)
			}
			if attr == "device_nguid" {
				n := nvmeof.NormalizeID(v)
				if len(n) != 32 {
					return werr(syscall.EINVAL)
				}
				v = n[0:8] + "-" + n[8:12] + "-" + n[12:16] + "-" + n[16:20] + "-" + n[20:]
			}
		case "buffered_io":
			if enabled {
				return werr(syscall.EINVAL)
			}
			v = boolAttr(parseBool(v))
		case "enable":
			on := parseBool(v)
			if on && !enabled {
				dp := f.readRaw(filepath.Join(dir, "device_path"))
				if dp == "" || dp == "(null)" {
					return werr(syscall.EINVAL)
				}
				if _, err := os.Stat(dp); err != nil {
					return werr(syscall.ENOENT)
				}
				if f.requireBufferedIO && !parseBool(f.readRaw(filepath.Join(dir, "buffered_io"))) {
					return werr(syscall.EINVAL)
				}
			}
			v = boolAttr(on)
		case "revalidate_size":
			if !enabled {
				return werr(syscall.EINVAL)
			}
			f.record("write %s=%s", f.rel(path), v)
			return nil // write-only trigger
		}
	case "subsystem":
		switch attr {
		case "attr_allow_any_host":
			on := parseBool(v)
			if on && !f.dirEmpty(filepath.Join(dir, "allowed_hosts")) {
				return werr(syscall.EINVAL)
			}
			v = boolAttr(on)
		case "attr_serial":
			if f.discovered[p[1]] || v == "" || len(v) > 20 {
				return werr(syscall.EINVAL)
			}
		}
	case "host":
		switch attr {
		case "dhchap_key", "dhchap_ctrl_key":
			// The kernel sees the raw bytes as a C string: a NUL ends it,
			// so "\x00" is "" (clear), while "\n" is a (bad) key.
			v = string(value)
			if i := strings.IndexByte(v, 0); i >= 0 {
				v = v[:i]
			}
			if v != "" {
				var hh int
				if n, _ := fmt.Sscanf(v, "DHHC-1:%d:", &hh); n != 1 || len(v) < 11 || hh < 0 || hh > 3 {
					return werr(syscall.EINVAL)
				}
				v = strings.TrimSpace(v)
			}
		case "dhchap_hash":
			if !slices.Contains([]string{"hmac(sha256)", "hmac(sha384)", "hmac(sha512)"}, v) {
				return werr(syscall.EINVAL)
			}
		case "dhchap_dhgroup":
			if !slices.Contains([]string{"null", "ffdhe2048", "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192"}, v) {
				return werr(syscall.EINVAL)
			}
			if f.noDH && v != "null" {
				return werr(syscall.EINVAL)
			}
		default:
			return werr(syscall.EPERM)
		}
	case "port":
		if !f.dirEmpty(filepath.Join(dir, "subsystems")) {
			return werr(syscall.EACCES)
		}
		switch attr {
		case "addr_trtype":
			if !slices.Contains([]string{"tcp", "rdma", "fc", "loop"}, v) {
				return werr(syscall.EINVAL)
			}
		case "addr_adrfam":
			if !slices.Contains([]string{"ipv4", "ipv6", "ib", "fc", "loop", "pcie"}, v) {
				return werr(syscall.EINVAL)
			}
		}
	default:
		return werr(syscall.EPERM)
	}
	if err := f.writeRaw(path, v); err != nil {
		return err
	}
	f.record("write %s=%s", f.rel(path), v)
	return nil
}

func werrEarly(path string, e syscall.Errno) error { return perr("write", path, e) }

func (f *fakeConfigFS) ReadDir(path string) ([]fs.DirEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return os.ReadDir(path)
}

func (f *fakeConfigFS) ReadFile(path string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return os.ReadFile(path)
}

func (f *fakeConfigFS) Readlink(path string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return os.Readlink(path)
}

func (f *fakeConfigFS) Lstat(path string) (fs.FileInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return os.Lstat(path)
}

// attr reads an attribute for assertions.
func (f *fakeConfigFS) attr(rel string) string {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.root, rel))
	if err != nil {
		f.t.Fatalf("reading %s: %v", rel, err)
	}
	return strings.TrimSpace(string(b))
}

func (f *fakeConfigFS) exists(rel string) bool {
	_, err := os.Lstat(filepath.Join(f.root, rel))
	return err == nil
}
