package host

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

// sysTree builds a temp tree shaped like the real sysfs/dev layout:
//
//	sys/class/nvme/nvme3/{state,subsysnqn,address,hostnqn,transport,delete_controller}
//	sys/class/nvme-subsystem/nvme-subsys1/{subsysnqn, nvme3 -> ../../nvme/nvme3, nvme1n2/}
//	sys/block/nvme1n2 -> ../class/nvme-subsystem/nvme-subsys1/nvme1n2
//	dev/nvme1n2
type sysTree struct {
	t    *testing.T
	root string
	// hostAuth: controllers get the dhchap_secret and dhchap_ctrl_secret
	// attributes of a kernel with NVMe host authentication.
	hostAuth bool
	// rogueTarget: the target does not ask for authentication, so a
	// controller connected with a controller secret is never logged as
	// authenticated.
	rogueTarget bool
}

// logKmsg appends a record to dev/kmsg as the kernel would log it.
func (s *sysTree) logKmsg(msg string) {
	s.t.Helper()
	f, err := os.OpenFile(s.path("dev/kmsg"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	s.check(err)
	if err == nil {
		_, err = fmt.Fprintf(f, "6,1234,5678901,-;%s\n SUBSYSTEM=nvme\n", msg)
		s.check(err)
		s.check(f.Close())
	}
}

// enableHostAuth makes the tree a kernel with host authentication: its
// symbol in proc/kallsyms, and the attributes on new controllers.
func (s *sysTree) enableHostAuth() {
	s.hostAuth = true
	s.logKmsg("nvme nvme0: qid 0: controller authenticated") // old news: before any Connect
	s.write("proc/kallsyms", "ffffffffc0a10000 t nvme_auth_free\t[nvme_core]\n"+
		"ffffffffc0a1b2c0 T "+hostAuthSymbol+"\t[nvme_core]\nffffffffc0a1b400 T nvme_auth_wait\t[nvme_core]\n")
}

// withoutHostAuth is a kernel whose kallsyms lacks host authentication,
// like Debian's 6.1.
func (s *sysTree) withoutHostAuth() {
	s.hostAuth = false
	s.write("proc/kallsyms", "ffffffffc0a10000 T nvme_init_ctrl\t[nvme_core]\nffffffffc0a10100 T nvmf_connect_admin_queue\t[nvme_fabrics]\n")
}

func newSysTree(t *testing.T) *sysTree {
	t.Helper()
	s := &sysTree{t: t, root: t.TempDir()}
	for _, d := range []string{"sys/class/nvme", "sys/class/nvme-subsystem", "sys/block", "dev"} {
		s.mkdir(d)
	}
	return s
}

func (s *sysTree) path(rel string) string { return filepath.Join(s.root, rel) }

// check reports a setup failure with Errorf, not Fatal: the helpers also run
// on goroutines (fake kernel reactions), where FailNow is not allowed.
func (s *sysTree) check(err error) {
	s.t.Helper()
	if err != nil {
		s.t.Errorf("sysTree: %v", err)
	}
}

func (s *sysTree) mkdir(rel string) {
	s.t.Helper()
	s.check(os.MkdirAll(s.path(rel), 0o755))
}

func (s *sysTree) write(rel, content string) {
	s.t.Helper()
	s.check(os.MkdirAll(filepath.Dir(s.path(rel)), 0o755))
	s.check(os.WriteFile(s.path(rel), []byte(content), 0o644))
}

func (s *sysTree) symlink(target, rel string) {
	s.t.Helper()
	s.check(os.Symlink(target, s.path(rel)))
}

type ctrlSpec struct {
	name, nqn, traddr, trsvcid, hostnqn, state string
	extraAddr                                  string // e.g. ",host_traddr=10.0.0.1"
	secret, ctrlSecret                         string // DH-HMAC-CHAP, with sysTree.hostAuth
}

func (s *sysTree) addController(c ctrlSpec) {
	s.t.Helper()
	if c.state == "" {
		c.state = "live"
	}
	d := "sys/class/nvme/" + c.name
	s.mkdir(d)
	addr := fmt.Sprintf("traddr=%s,trsvcid=%s%s", c.traddr, c.trsvcid, c.extraAddr)
	if c.state == "live" {
		addr += ",src_addr=" + c.traddr
	}
	for f, v := range map[string]string{
		"state": c.state, "subsysnqn": c.nqn, "address": addr, "hostnqn": c.hostnqn,
		"transport": "tcp", "delete_controller": "", "cntlid": "1",
	} {
		s.write(d+"/"+f, v+"\n")
	}
	if s.hostAuth {
		for f, v := range map[string]string{"dhchap_secret": c.secret, "dhchap_ctrl_secret": c.ctrlSecret} {
			if v == "" {
				v = "none"
			}
			s.write(d+"/"+f, v+"\n")
		}
	}
}

func (s *sysTree) setState(ctrl, state string) {
	s.write("sys/class/nvme/"+ctrl+"/state", state+"\n")
}

func (s *sysTree) addSubsystem(sub, nqn string, ctrls ...string) {
	s.t.Helper()
	d := "sys/class/nvme-subsystem/" + sub
	s.mkdir(d)
	s.write(d+"/subsysnqn", nqn+"\n")
	s.write(d+"/iopolicy", "numa\n")
	for _, c := range ctrls {
		s.symlink("../../nvme/"+c, d+"/"+c)
	}
}

type nsSpec struct {
	dev         string
	nsid        int
	uuid, nguid string
	sectors     uint64
	noDevNode   bool
}

func (s *sysTree) writeNS(dir string, n nsSpec) {
	s.mkdir(dir)
	s.write(dir+"/nsid", fmt.Sprintf("%d\n", n.nsid))
	s.write(dir+"/size", fmt.Sprintf("%d\n", n.sectors))
	if n.uuid != "" {
		s.write(dir+"/uuid", n.uuid+"\n")
		s.write(dir+"/wwid", "uuid."+n.uuid+"\n")
	} else if n.nguid != "" {
		s.write(dir+"/wwid", "eui."+strings.ReplaceAll(n.nguid, "-", "")+"\n")
	}
	if n.nguid != "" {
		s.write(dir+"/nguid", n.nguid+"\n")
	}
	if !n.noDevNode {
		s.write("dev/"+n.dev, "")
	}
}

// addHead adds a native-multipath namespace head inside the subsystem dir.
func (s *sysTree) addHead(sub string, n nsSpec) {
	s.t.Helper()
	dir := "sys/class/nvme-subsystem/" + sub + "/" + n.dev
	s.writeNS(dir, n)
	s.symlink("../class/nvme-subsystem/"+sub+"/"+n.dev, "sys/block/"+n.dev)
}

// addCtrlDisk adds a disk under a controller dir (non-multipath kernels, or
// the hidden per-path nvmeXcYnZ devices with multipath).
func (s *sysTree) addCtrlDisk(ctrl string, n nsSpec) {
	s.t.Helper()
	dir := "sys/class/nvme/" + ctrl + "/" + n.dev
	s.writeNS(dir, n)
	s.symlink("../class/nvme/"+ctrl+"/"+n.dev, "sys/block/"+n.dev)
}

func (s *sysTree) remove(rel string) {
	s.t.Helper()
	s.check(os.RemoveAll(s.path(rel)))
}

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in                       string
		traddr, trsvcid, srcaddr string
	}{
		{"traddr=127.0.0.1,trsvcid=4420\n", "127.0.0.1", "4420", ""},
		{"traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1\n", "127.0.0.1", "4420", "127.0.0.1"},
		{"traddr=10.0.0.2,trsvcid=4421,host_traddr=10.0.0.1,src_addr=10.0.0.1", "10.0.0.2", "4421", "10.0.0.1"},
		{"traddr=fd00::2,trsvcid=4420,src_addr=fd00::1\n", "fd00::2", "4420", "fd00::1"},
		{"trsvcid=4420,traddr=1.2.3.4", "1.2.3.4", "4420", ""},
		{"", "", "", ""},
		{"\n", "", "", ""},
		{"0000:01:00.0\n", "", "", ""}, // PCIe controllers show a PCI address
		{"traddr=,trsvcid=", "", "", ""},
		{"traddr=1.1.1.1,traddr=2.2.2.2", "1.1.1.1", "", ""},
		{"garbage,=x,traddr=9.9.9.9", "9.9.9.9", "", ""},
	}
	for _, tc := range tests {
		a, p, s := ParseAddress(tc.in)
		if a != tc.traddr || p != tc.trsvcid || s != tc.srcaddr {
			t.Errorf("ParseAddress(%q) = %q,%q,%q; want %q,%q,%q", tc.in, a, p, s, tc.traddr, tc.trsvcid, tc.srcaddr)
		}
	}
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		"traddr=127.0.0.1,trsvcid=4420\n",
		"traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1\n",
		"traddr=fd00::2,trsvcid=4420,host_traddr=fd00::1,host_iface=eth0,src_addr=fd00::1\n",
		"", "=", ",,,", "traddr=", "0000:01:00.0\n", "traddr=a=b,trsvcid=\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, p, src := ParseAddress(s)
		for _, v := range []string{a, p, src} {
			if strings.ContainsAny(v, ",\n\r") {
				t.Fatalf("ParseAddress(%q) returned a value with a separator: %q", s, v)
			}
			if v != strings.TrimSpace(v) {
				t.Fatalf("ParseAddress(%q) returned untrimmed %q", s, v)
			}
			if v != "" && !strings.Contains(s, v) {
				t.Fatalf("ParseAddress(%q) invented %q", s, v)
			}
		}
		// Round trip for values that are representable.
		if a != "" && p != "" && !strings.Contains(a, "=") && !strings.Contains(p, "=") {
			a2, p2, _ := ParseAddress("traddr=" + a + ",trsvcid=" + p + "\n")
			if a2 != a || p2 != p {
				t.Fatalf("round trip of %q,%q gave %q,%q", a, p, a2, p2)
			}
		}
	})
}

func TestSortNatural(t *testing.T) {
	in := []string{"nvme10", "nvme2", "nvme1", "nvme1n10", "nvme1n2", "nvme-subsys3", "nvme-subsys12"}
	sortNatural(in)
	want := []string{"nvme1", "nvme1n2", "nvme1n10", "nvme2", "nvme-subsys3", "nvme10", "nvme-subsys12"}
	if !slices.Equal(in, want) {
		t.Errorf("sortNatural = %v, want %v", in, want)
	}
}

func TestNameRegexps(t *testing.T) {
	tests := []struct {
		name        string
		ctrl, nsDev bool
	}{
		{"nvme0", true, false},
		{"nvme12", true, false},
		{"nvme1n2", false, true},
		{"nvme1c3n1", false, false}, // hidden per-path device
		{"nvme1n2p1", false, false}, // partition
		{"nvme-fabrics", false, false},
		{"nvme-subsys1", false, false},
		{"nvme", false, false},
		{"../nvme1", false, false},
	}
	for _, tc := range tests {
		if got := ctrlNameRE.MatchString(tc.name); got != tc.ctrl {
			t.Errorf("ctrlNameRE(%q) = %v", tc.name, got)
		}
		if got := nsNameRE.MatchString(tc.name); got != tc.nsDev {
			t.Errorf("nsNameRE(%q) = %v", tc.name, got)
		}
	}
}

func TestReadController(t *testing.T) {
	const nqn = "nqn.2024-01.io.nvmirror:vol1"
	tree := newSysTree(t)
	tree.addController(ctrlSpec{name: "nvme3", nqn: nqn, traddr: "127.0.0.1", trsvcid: "4421", hostnqn: testHostNQN})
	tree.addController(ctrlSpec{name: "nvme10", nqn: nqn, traddr: "127.0.0.2", trsvcid: "4422", hostnqn: testHostNQN, state: "deleting (no IO)"})
	tree.addSubsystem("nvme-subsys1", nqn, "nvme3", "nvme10")
	// A PCIe controller: no hostnqn, a PCI address, not in a fabrics subsystem.
	tree.mkdir("sys/class/nvme/nvme0")
	tree.write("sys/class/nvme/nvme0/state", "live\n")
	tree.write("sys/class/nvme/nvme0/transport", "pcie\n")
	tree.write("sys/class/nvme/nvme0/address", "0000:01:00.0\n")
	tree.write("sys/class/nvme/nvme0/subsysnqn", "nqn.2014.08.org.nvmexpress:144d144dS4EWNX0R123456\n")
	// Noise that must be ignored.
	tree.mkdir("sys/class/nvme/nvme-fabrics")

	s := Sysfs{root: tree.root}
	c, err := s.controller("nvme3")
	if err != nil {
		t.Fatal(err)
	}
	want := Controller{Name: "nvme3", Instance: 3, Transport: "tcp", SubsysNQN: nqn, HostNQN: testHostNQN,
		TrAddr: "127.0.0.1", TrSvcID: "4421", SrcAddr: "127.0.0.1", State: StateLive, Subsystem: "nvme-subsys1"}
	if c != want {
		t.Errorf("controller = %+v\nwant %+v", c, want)
	}
	if !c.State.IsLive() {
		t.Errorf("live controller not IsLive")
	}

	all, err := s.controllers()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range all {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, []string{"nvme0", "nvme3", "nvme10"}) {
		t.Errorf("controllers = %v", names)
	}
	if all[2].State != StateDeletingNoIO || all[2].State.IsLive() || !all[2].State.isGone() {
		t.Errorf("nvme10 state = %q", all[2].State)
	}
	if all[0].Subsystem != "" || all[0].TrAddr != "" || all[0].Transport != "pcie" {
		t.Errorf("pcie controller = %+v", all[0])
	}

	for _, tc := range []struct {
		name string
		err  error
	}{
		{"nvme9", nvmeof.ErrNotFound},
		{"nvme1n2", nvmeof.ErrInvalidArgument},
		{"../../etc", nvmeof.ErrInvalidArgument},
		{"", nvmeof.ErrInvalidArgument},
	} {
		if _, err := s.controller(tc.name); !errors.Is(err, tc.err) {
			t.Errorf("controller(%q) = %v, want %v", tc.name, err, tc.err)
		}
	}
}

func TestControllerStates(t *testing.T) {
	tests := []struct {
		s          ControllerState
		live, gone bool
	}{
		{StateNew, false, false},
		{StateLive, true, false},
		{StateResetting, false, false},
		{StateConnecting, false, false},
		{StateDeleting, false, true},
		{StateDeletingNoIO, false, true},
		{StateDead, false, true},
		{ControllerState(""), false, false},
	}
	for _, tc := range tests {
		if tc.s.IsLive() != tc.live || tc.s.isGone() != tc.gone {
			t.Errorf("%q: IsLive=%v isGone=%v", tc.s, tc.s.IsLive(), tc.s.isGone())
		}
	}
}

func TestListNamesMissingDir(t *testing.T) {
	names, err := listNames(filepath.Join(t.TempDir(), "absent"), ctrlNameRE)
	if err != nil || names != nil {
		t.Errorf("listNames(missing) = %v, %v", names, err)
	}
	// No class dirs at all (modules not loaded): empty, not an error.
	s := Sysfs{root: t.TempDir()}
	if cs, err := s.controllers(); err != nil || len(cs) != 0 {
		t.Errorf("controllers without sysfs = %v, %v", cs, err)
	}
}
