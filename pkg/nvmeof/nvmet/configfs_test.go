package nvmet

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The real configFS on an ordinary directory: the properties that matter on
// configfs (no file creation, no truncation flag, errors surfaced) hold
// there too.
func TestRealConfigFS(t *testing.T) {
	dir := t.TempDir()
	c := realConfigFS{}
	attr := filepath.Join(dir, "enable")
	if err := os.WriteFile(attr, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		op    func() error
		errIs error
	}{
		{"write existing", func() error { return c.WriteFile(attr, []byte("1")) }, nil},
		{"write creates nothing", func() error { return c.WriteFile(filepath.Join(dir, "device_path"), []byte("/x")) }, fs.ErrNotExist},
		{"mkdir", func() error { return c.Mkdir(filepath.Join(dir, "sub")) }, nil},
		{"mkdir again", func() error { return c.Mkdir(filepath.Join(dir, "sub")) }, fs.ErrExist},
		{"symlink", func() error { return c.Symlink(filepath.Join(dir, "sub"), filepath.Join(dir, "link")) }, nil},
		{"rmdir on a file", func() error { return c.Rmdir(attr) }, syscall.ENOTDIR},
		{"unlink a dir", func() error { return c.Remove(filepath.Join(dir, "sub")) }, nil /* checked below */},
		{"unlink link", func() error { return c.Remove(filepath.Join(dir, "link")) }, nil},
		{"unlink missing", func() error { return c.Remove(filepath.Join(dir, "link")) }, fs.ErrNotExist},
		{"rmdir", func() error { return c.Rmdir(filepath.Join(dir, "sub")) }, nil},
		{"rmdir missing", func() error { return c.Rmdir(filepath.Join(dir, "sub")) }, fs.ErrNotExist},
	}
	for _, tc := range tests {
		err := tc.op()
		if tc.name == "unlink a dir" {
			if err == nil {
				t.Errorf("%s: unlink(2) of a directory succeeded", tc.name)
			}
			continue
		}
		if tc.errIs == nil && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if tc.errIs != nil && !errors.Is(err, tc.errIs) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.errIs)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "device_path")); !os.IsNotExist(err) {
		t.Errorf("WriteFile created an attribute")
	}
	// O_WRONLY without O_TRUNC: the value is written over the old one.
	if b, _ := c.ReadFile(attr); string(b) != "1\n" {
		t.Errorf("attribute = %q", b)
	}
	if err := c.Mkdir(filepath.Join(dir, "d")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "d", "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.Rmdir(filepath.Join(dir, "d")); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		t.Errorf("rmdir of a non-empty dir = %v", err)
	}
	if err := c.Symlink("/abs/target", filepath.Join(dir, "l2")); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Readlink(filepath.Join(dir, "l2")); err != nil || got != "/abs/target" {
		t.Errorf("Readlink = %q, %v", got, err)
	}
	if fi, err := c.Lstat(filepath.Join(dir, "l2")); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("Lstat = %v, %v", fi, err)
	}
	if es, err := c.ReadDir(dir); err != nil || len(es) != 3 {
		t.Errorf("ReadDir = %v, %v", es, err)
	}
}

// The fake must refuse what configfs refuses, or it would hide ordering
// bugs in Target.
func TestFakeConfigFSSemantics(t *testing.T) {
	f := newFakeConfigFS(t)
	backing := filepath.Join(t.TempDir(), "backing.img")
	if err := os.WriteFile(backing, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(f.root, "subsystems", testNQN)
	ns := filepath.Join(sub, "namespaces", "1")
	port := filepath.Join(f.root, "ports", "1")
	host := filepath.Join(f.root, "hosts", testHostNQN)
	steps := []struct {
		name  string
		op    func() error
		errno syscall.Errno // 0 = success
	}{
		{"mkdir outside items", func() error { return f.Mkdir(filepath.Join(f.root, "junk")) }, syscall.EPERM},
		{"mkdir subsystem", func() error { return f.Mkdir(sub) }, 0},
		{"mkdir subsystem again", func() error { return f.Mkdir(sub) }, syscall.EEXIST},
		{"create an attribute", func() error { return f.WriteFile(filepath.Join(sub, "attr_bogus"), []byte("1")) }, syscall.ENOENT},
		{"mkdir namespace", func() error { return f.Mkdir(ns) }, 0},
		{"mkdir namespace 0", func() error { return f.Mkdir(filepath.Join(sub, "namespaces", "0")) }, syscall.EINVAL},
		{"enable without device_path", func() error { return f.WriteFile(filepath.Join(ns, "enable"), []byte("1")) }, syscall.EINVAL},
		{"device_path missing file", func() error { return f.WriteFile(filepath.Join(ns, "device_path"), []byte("/nonexistent")) }, 0},
		{"enable with missing file", func() error { return f.WriteFile(filepath.Join(ns, "enable"), []byte("1")) }, syscall.ENOENT},
		{"device_path", func() error { return f.WriteFile(filepath.Join(ns, "device_path"), []byte(backing)) }, 0},
		{"bad uuid", func() error { return f.WriteFile(filepath.Join(ns, "device_uuid"), []byte("x")) }, syscall.EINVAL},
		{"revalidate disabled", func() error { return f.WriteFile(filepath.Join(ns, "revalidate_size"), []byte("1")) }, syscall.EINVAL},
		{"enable", func() error { return f.WriteFile(filepath.Join(ns, "enable"), []byte("1")) }, 0},
		{"device_path while enabled", func() error { return f.WriteFile(filepath.Join(ns, "device_path"), []byte(backing)) }, syscall.EBUSY},
		{"buffered_io while enabled", func() error { return f.WriteFile(filepath.Join(ns, "buffered_io"), []byte("1")) }, syscall.EINVAL},
		{"rmdir subsystem with namespace", func() error { return f.Rmdir(sub) }, syscall.ENOTEMPTY},
		{"rmdir default group", func() error { return f.Rmdir(filepath.Join(sub, "namespaces")) }, syscall.EPERM},
		{"unlink attribute", func() error { return f.Remove(filepath.Join(sub, "attr_serial")) }, syscall.EPERM},
		{"mkdir host", func() error { return f.Mkdir(host) }, 0},
		{"link host while allow_any_host=1", func() error {
			return f.Symlink(host, filepath.Join(sub, "allowed_hosts", testHostNQN))
		}, syscall.EINVAL},
		{"allow_any_host=0", func() error { return f.WriteFile(filepath.Join(sub, "attr_allow_any_host"), []byte("0")) }, 0},
		{"relative link target", func() error {
			return f.Symlink("../../../hosts/"+testHostNQN, filepath.Join(sub, "allowed_hosts", testHostNQN))
		}, syscall.EINVAL},
		{"link host", func() error { return f.Symlink(host, filepath.Join(sub, "allowed_hosts", testHostNQN)) }, 0},
		{"allow_any_host=1 with hosts", func() error {
			return f.WriteFile(filepath.Join(sub, "attr_allow_any_host"), []byte("1"))
		}, syscall.EINVAL},
		{"rmdir linked host", func() error { return f.Rmdir(host) }, syscall.EBUSY},
		{"mkdir port", func() error { return f.Mkdir(port) }, 0},
		{"link unconfigured port", func() error {
			return f.Symlink(sub, filepath.Join(port, "subsystems", testNQN))
		}, syscall.EINVAL},
		{"trtype", func() error { return f.WriteFile(filepath.Join(port, "addr_trtype"), []byte("tcp")) }, 0},
		{"traddr", func() error { return f.WriteFile(filepath.Join(port, "addr_traddr"), []byte("127.0.0.1")) }, 0},
		{"link port", func() error { return f.Symlink(sub, filepath.Join(port, "subsystems", testNQN)) }, 0},
		{"address while enabled", func() error {
			return f.WriteFile(filepath.Join(port, "addr_trsvcid"), []byte("4420"))
		}, syscall.EACCES},
		{"rmdir port with link", func() error { return f.Rmdir(port) }, syscall.ENOTEMPTY},
		{"rmdir namespace", func() error { return f.Rmdir(ns) }, 0},
		{"unlink host", func() error { return f.Remove(filepath.Join(sub, "allowed_hosts", testHostNQN)) }, 0},
		{"rmdir exported subsystem", func() error { return f.Rmdir(sub) }, syscall.EBUSY},
		{"unlink port", func() error { return f.Remove(filepath.Join(port, "subsystems", testNQN)) }, 0},
		{"rmdir subsystem", func() error { return f.Rmdir(sub) }, 0},
		{"rmdir missing", func() error { return f.Rmdir(sub) }, syscall.ENOENT},
	}
	for _, s := range steps {
		err := s.op()
		if s.errno == 0 && err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if s.errno != 0 && !errors.Is(err, s.errno) {
			t.Fatalf("%s: %v, want %v", s.name, err, s.errno)
		}
	}
	if !strings.Contains(strings.Join(f.Ops(), "\n"), "write subsystems/"+testNQN+"/namespaces/1/enable=1") {
		t.Errorf("ops log misses the enable: %v", f.Ops())
	}
}
