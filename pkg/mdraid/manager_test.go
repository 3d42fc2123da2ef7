package mdraid

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"k8s.io/utils/exec"
	testingexec "k8s.io/utils/exec/testing"

	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
)

// mdadmStep is one mdadm run a test expects, and what mdadm answers.
type mdadmStep struct {
	// args is the exact argv after "mdadm".
	args []string
	// fixture names testdata/mdadm/<fixture>.{stdout,stderr,rc}, what a real
	// mdadm printed; when empty, stdout, stderr and exit are used.
	fixture        string
	stdout, stderr string
	exit           int
	// runErr is returned by Run instead of an exit status.
	runErr error
	// effect runs when mdadm "runs", e.g. to make an array appear in sysfs.
	effect func()
}

// newFakeMdadm returns a FakeExec that expects exactly these mdadm runs, in
// order, with exactly these arguments; any other run fails the test.
func newFakeMdadm(t *testing.T, steps ...mdadmStep) *testingexec.FakeExec {
	t.Helper()
	fe := &testingexec.FakeExec{ExactOrder: true}
	for _, s := range steps {
		want := append([]string{mdadmCommand}, s.args...)
		fe.CommandScript = append(fe.CommandScript, func(cmd string, args ...string) exec.Cmd {
			if got := append([]string{cmd}, args...); !slices.Equal(got, want) {
				t.Fatalf("mdadm argv\n got  %q\n want %q", got, want)
			}
			stdout, stderr, exit := []byte(s.stdout), []byte(s.stderr), s.exit
			if s.fixture != "" {
				stdout, stderr, exit = loadMdadmFixture(t, s.fixture)
			}
			return &testingexec.FakeCmd{Argv: want, RunScript: []testingexec.FakeAction{func() ([]byte, []byte, error) {
				if s.effect != nil {
					s.effect()
				}
				switch {
				case s.runErr != nil:
					return stdout, stderr, s.runErr
				case exit != 0:
					return stdout, stderr, testingexec.FakeExitError{Status: exit}
				}
				return stdout, stderr, nil
			}}}
		})
	}
	expected := len(fe.CommandScript)
	fe.CommandScript = append(fe.CommandScript, func(cmd string, args ...string) exec.Cmd {
		t.Fatalf("unexpected run: %s %q", cmd, args)
		return nil
	})
	t.Cleanup(func() {
		if fe.CommandCalls < expected {
			t.Errorf("mdadm ran %d times, want %d", fe.CommandCalls, expected)
		}
	})
	return fe
}

func loadMdadmFixture(t *testing.T, name string) (stdout, stderr []byte, exit int) {
	t.Helper()
	base := filepath.Join("testdata", "mdadm", name)
	rc, err := os.ReadFile(base + ".rc")
	if err != nil {
		t.Fatalf("mdadm fixture %s: %v", name, err)
	}
	if exit, err = strconv.Atoi(strings.TrimSpace(string(rc))); err != nil {
		t.Fatalf("mdadm fixture %s: exit code: %v", name, err)
	}
	stdout, _ = os.ReadFile(base + ".stdout")
	stderr, _ = os.ReadFile(base + ".stderr")
	return stdout, stderr, exit
}

func wantError(t *testing.T, err, want error, mentions ...string) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	for _, m := range mentions {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
}

func TestCreate(t *testing.T) {
	three := []string{"/dev/nvme0n1", "/dev/nvme1n1", "/dev/nvme2n1"}
	tests := []struct {
		name     string
		opts     CreateOptions
		step     *mdadmStep
		wantErr  error
		mentions []string
	}{
		{
			name: "three replicas, zeroed, small bitmap chunk",
			opts: CreateOptions{Device: "/dev/md127", Name: "vol-a", Devices: three, BitmapChunk: 1 << 20, AssumeClean: true},
			step: &mdadmStep{args: []string{"--create", "/dev/md127", "--run", "--metadata=1.2", "--level=1", "--raid-devices=3",
				"--bitmap=internal", "--bitmap-chunk=1024K", "--failfast", "--homehost=any", "--name=vol-a", "--assume-clean",
				"/dev/nvme0n1", "/dev/nvme1n1", "/dev/nvme2n1"}, fixture: "create"},
		},
		{
			name: "fixed data offset (nvmirror's metadata reserve)",
			opts: CreateOptions{Device: "/dev/md1", Name: "vol-b", Devices: three[:2], DataOffset: layout.MetadataReserve, AssumeClean: true},
			step: &mdadmStep{args: []string{"--create", "/dev/md1", "--run", "--metadata=1.2", "--level=1", "--raid-devices=2",
				"--bitmap=internal", "--data-offset=4096K", "--failfast", "--homehost=any", "--name=vol-b", "--assume-clean",
				"/dev/nvme0n1", "/dev/nvme1n1"}},
		},
		{
			name:    "data offset not a whole MiB",
			opts:    CreateOptions{Device: "/dev/md1", Name: "vol-b", Devices: three[:2], DataOffset: 4096},
			wantErr: ErrInvalidArgument, mentions: []string{"data offset"},
		},
		{
			name: "two replicas, default chunk, initial resync",
			opts: CreateOptions{Device: "/dev/md0", Name: "pvc-1.a_b", Devices: three[:2]},
			step: &mdadmStep{args: []string{"--create", "/dev/md0", "--run", "--metadata=1.2", "--level=1", "--raid-devices=2",
				"--bitmap=internal", "--failfast", "--homehost=any", "--name=pvc-1.a_b", "/dev/nvme0n1", "/dev/nvme1n1"}},
		},
		{
			name: "four replicas, 31-byte name",
			opts: CreateOptions{Device: "/dev/md5", Name: strings.Repeat("n", 31), Devices: append(slices.Clone(three), "/dev/nvme3n1"), BitmapChunk: 4096},
			step: &mdadmStep{args: []string{"--create", "/dev/md5", "--run", "--metadata=1.2", "--level=1", "--raid-devices=4",
				"--bitmap=internal", "--bitmap-chunk=4K", "--failfast", "--homehost=any", "--name=" + strings.Repeat("n", 31),
				"/dev/nvme0n1", "/dev/nvme1n1", "/dev/nvme2n1", "/dev/nvme3n1"}},
		},
		{
			name: "md device number in use",
			opts: CreateOptions{Device: "/dev/md127", Name: "vol-a", Devices: three[:2]},
			step: &mdadmStep{args: []string{"--create", "/dev/md127", "--run", "--metadata=1.2", "--level=1", "--raid-devices=2",
				"--bitmap=internal", "--failfast", "--homehost=any", "--name=vol-a", "/dev/nvme0n1", "/dev/nvme1n1"}, fixture: "create-device-in-use"},
			wantErr: ErrBusy, mentions: []string{"/dev/md127", "vol-a", "already in use"},
		},
		{
			name: "member held by another array",
			opts: CreateOptions{Device: "/dev/md108", Name: "vol-b", Devices: three[:2]},
			step: &mdadmStep{args: []string{"--create", "/dev/md108", "--run", "--metadata=1.2", "--level=1", "--raid-devices=2",
				"--bitmap=internal", "--failfast", "--homehost=any", "--name=vol-b", "/dev/nvme0n1", "/dev/nvme1n1"}, fixture: "create-member-busy"},
			wantErr: ErrBusy, mentions: []string{"cannot open /dev/nvme0n1"},
		},
		{
			name: "assigned uuid in sysfs form is passed in mdadm form",
			opts: CreateOptions{Device: "/dev/md126", Name: "vol-u", Devices: three[:2], UUID: "3A1F0C2E-9B4D-4E7A-8C11-0123456789AB"},
			step: &mdadmStep{args: []string{"--create", "/dev/md126", "--run", "--metadata=1.2", "--level=1", "--raid-devices=2",
				"--bitmap=internal", "--failfast", "--homehost=any", "--name=vol-u", "--uuid=3a1f0c2e:9b4d4e7a:8c110123:456789ab",
				"/dev/nvme0n1", "/dev/nvme1n1"}},
		},
		{name: "malformed uuid", opts: CreateOptions{Device: "/dev/md1", Name: "v", Devices: three[:2], UUID: "not-a-uuid"},
			wantErr: ErrInvalidArgument, mentions: []string{"not-a-uuid"}},
		{name: "one replica", opts: CreateOptions{Device: "/dev/md1", Name: "v", Devices: three[:1]},
			wantErr: ErrInvalidArgument, mentions: []string{"at least 2 members", "1-replica volumes are served without md"}},
		{name: "no replica", opts: CreateOptions{Device: "/dev/md1", Name: "v"}, wantErr: ErrInvalidArgument},
		{name: "five replicas", opts: CreateOptions{Device: "/dev/md1", Name: "v", Devices: []string{"/dev/a", "/dev/b", "/dev/c", "/dev/d", "/dev/e"}},
			wantErr: ErrInvalidArgument, mentions: []string{"5 members"}},
		{name: "device not md", opts: CreateOptions{Device: "/dev/sda", Name: "v", Devices: three}, wantErr: ErrInvalidArgument, mentions: []string{"/dev/sda"}},
		{name: "device named by link", opts: CreateOptions{Device: "/dev/md/vol", Name: "v", Devices: three}, wantErr: ErrInvalidArgument},
		{name: "empty name", opts: CreateOptions{Device: "/dev/md1", Devices: three}, wantErr: ErrInvalidArgument},
		{name: "name mdadm would truncate", opts: CreateOptions{Device: "/dev/md1", Name: strings.Repeat("n", 32), Devices: three}, wantErr: ErrInvalidArgument},
		{name: "name like an option", opts: CreateOptions{Device: "/dev/md1", Name: "-force", Devices: three}, wantErr: ErrInvalidArgument, mentions: []string{"-force"}},
		{name: "hidden name", opts: CreateOptions{Device: "/dev/md1", Name: ".v", Devices: three}, wantErr: ErrInvalidArgument},
		{name: "name with homehost separator", opts: CreateOptions{Device: "/dev/md1", Name: "host:v", Devices: three}, wantErr: ErrInvalidArgument},
		{name: "name with space", opts: CreateOptions{Device: "/dev/md1", Name: "a b", Devices: three}, wantErr: ErrInvalidArgument},
		{name: "relative member", opts: CreateOptions{Device: "/dev/md1", Name: "v", Devices: []string{"nvme0n1", "/dev/nvme1n1"}},
			wantErr: ErrInvalidArgument, mentions: []string{`"nvme0n1"`}},
		{name: "member outside /dev", opts: CreateOptions{Device: "/dev/md1", Name: "v", Devices: []string{"/dev/../etc/passwd", "/dev/nvme1n1"}}, wantErr: ErrInvalidArgument},
		{name: "member with space", opts: CreateOptions{Device: "/dev/md1", Name: "v", Devices: []string{"/dev/nvme0n1 --force", "/dev/nvme1n1"}}, wantErr: ErrInvalidArgument},
		{name: "member twice", opts: CreateOptions{Device: "/dev/md1", Name: "v", Devices: []string{"/dev/nvme0n1", "/dev/nvme0n1"}},
			wantErr: ErrInvalidArgument, mentions: []string{"twice"}},
		{name: "bitmap chunk not a power of two", opts: CreateOptions{Device: "/dev/md1", Name: "v", Devices: three, BitmapChunk: 3 << 12},
			wantErr: ErrInvalidArgument, mentions: []string{"12288"}},
		{name: "bitmap chunk below a page", opts: CreateOptions{Device: "/dev/md1", Name: "v", Devices: three, BitmapChunk: 2048}, wantErr: ErrInvalidArgument},
		{name: "negative bitmap chunk", opts: CreateOptions{Device: "/dev/md1", Name: "v", Devices: three, BitmapChunk: -4096}, wantErr: ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var steps []mdadmStep
			if tt.step != nil {
				steps = append(steps, *tt.step)
			}
			m := NewManager(newFakeMdadm(t, steps...), sysRoot(t))
			wantError(t, m.Create(context.Background(), tt.opts), tt.wantErr, tt.mentions...)
		})
	}
}

func TestAssemble(t *testing.T) {
	const uuid = "8b298196:48aa4550:d7d4d20e:9af2a785"
	members := []string{"/dev/nvme0n1", "/dev/nvme1n1", "/dev/nvme2n1"}
	assembleArgs := func(device string) []string {
		return append([]string{"--assemble", device, "--uuid=" + uuid, "--run"}, members...)
	}
	tests := []struct {
		name     string
		device   string
		uuid     string
		members  []string
		sysfs    func(t *testing.T, root string)
		step     func(root string) *mdadmStep
		wantErr  error
		mentions []string
	}{
		{
			name: "stopped array", device: "/dev/md127", uuid: uuid,
			step: func(string) *mdadmStep { return &mdadmStep{args: assembleArgs("/dev/md127"), fixture: "assemble"} },
		},
		{
			name: "sysfs form of the uuid is passed in mdadm's form", device: "/dev/md127", uuid: "8b298196-48aa-4550-d7d4-d20e9af2a785",
			step: func(string) *mdadmStep { return &mdadmStep{args: assembleArgs("/dev/md127"), fixture: "assemble"} },
		},
		{
			name: "already running here", device: "/dev/md127", uuid: uuid,
			sysfs: func(t *testing.T, root string) { installSysfs(t, root, "raid1-clean", "") },
		},
		{
			name: "already running degraded here", device: "/dev/md127", uuid: uuid,
			sysfs: func(t *testing.T, root string) { installSysfs(t, root, "raid1-target-lost", "") },
		},
		{
			name: "running under another device", device: "/dev/md100", uuid: uuid,
			sysfs:   func(t *testing.T, root string) { installSysfs(t, root, "raid1-clean", "") },
			wantErr: ErrAssembledElsewhere, mentions: []string{"/dev/md127", "/dev/md100", uuid},
		},
		{
			name: "member held by an inactive array", device: "/dev/md110", uuid: uuid, members: []string{"/dev/ram4"},
			sysfs:   func(t *testing.T, root string) { installSysfs(t, root, "inactive", "") },
			wantErr: ErrBusy, mentions: []string{"/dev/ram4", "/dev/md124", "inactive"},
		},
		{
			name: "mdadm merged into another array anyway", device: "/dev/md127", uuid: uuid,
			step: func(root string) *mdadmStep {
				return &mdadmStep{args: assembleArgs("/dev/md127"), fixture: "assemble-merges-inactive-holder",
					effect: func() { installSysfs(t, root, "raid1-clean", "md124") }}
			},
			wantErr: ErrAssembledElsewhere, mentions: []string{"/dev/md124"},
		},
		{
			name: "members carry another uuid", device: "/dev/md127", uuid: uuid,
			step: func(string) *mdadmStep {
				return &mdadmStep{args: assembleArgs("/dev/md127"), fixture: "assemble-wrong-uuid"}
			},
			wantErr: ErrNotFound, mentions: []string{"has wrong uuid"},
		},
		{
			name: "members without superblock", device: "/dev/md127", uuid: uuid,
			step: func(string) *mdadmStep {
				return &mdadmStep{args: assembleArgs("/dev/md127"), fixture: "assemble-no-superblock"}
			},
			wantErr: ErrNoSuperblock,
		},
		{
			name: "members busy", device: "/dev/md127", uuid: uuid,
			step: func(string) *mdadmStep {
				return &mdadmStep{args: assembleArgs("/dev/md127"), fixture: "assemble-running-elsewhere"}
			},
			wantErr: ErrBusy,
		},
		{
			name: "not enough members", device: "/dev/md127", uuid: uuid,
			step: func(string) *mdadmStep {
				return &mdadmStep{args: assembleArgs("/dev/md127"), exit: 1,
					stderr: "mdadm: /dev/md127 assembled from 0 drives and 1 spare - not enough to start the array.\n"}
			},
			wantErr: ErrNotEnoughMembers,
		},
		{name: "bad uuid", device: "/dev/md127", uuid: "vol-a", wantErr: ErrInvalidArgument, mentions: []string{"vol-a"}},
		{name: "no members", device: "/dev/md127", uuid: uuid, members: []string{}, wantErr: ErrInvalidArgument},
		{name: "bad member", device: "/dev/md127", uuid: uuid, members: []string{"--force"}, wantErr: ErrInvalidArgument},
		{name: "bad device", device: "md127", uuid: uuid, wantErr: ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := sysRoot(t)
			if tt.sysfs != nil {
				tt.sysfs(t, root)
			}
			var steps []mdadmStep
			if tt.step != nil {
				steps = append(steps, *tt.step(root))
			}
			devices := members
			if tt.members != nil {
				devices = tt.members
			}
			m := NewManager(newFakeMdadm(t, steps...), root)
			wantError(t, m.Assemble(context.Background(), tt.device, tt.uuid, devices), tt.wantErr, tt.mentions...)
		})
	}
}

func TestStop(t *testing.T) {
	stop := []string{"--stop", "/dev/md127"}
	tests := []struct {
		name    string
		sysfs   func(t *testing.T, root string)
		step    *mdadmStep
		wantErr error
	}{
		{name: "running", sysfs: func(t *testing.T, root string) { installSysfs(t, root, "raid1-clean", "") },
			step: &mdadmStep{args: stop, fixture: "stop"}},
		{name: "inactive", sysfs: func(t *testing.T, root string) { installSysfs(t, root, "inactive", "md127") },
			step: &mdadmStep{args: stop, fixture: "stop"}},
		{name: "absent"},
		{name: "unconfigured", sysfs: func(t *testing.T, root string) { writeSysFile(t, root, "block/md127/md/array_state", "clear") }},
		{name: "vanished before mdadm opened it", sysfs: func(t *testing.T, root string) { installSysfs(t, root, "raid1-clean", "") },
			step: &mdadmStep{args: stop, fixture: "stop-again"}},
		{name: "vanished to an empty device", sysfs: func(t *testing.T, root string) { installSysfs(t, root, "raid1-clean", "") },
			step: &mdadmStep{args: stop, exit: 1, stderr: "mdadm: /dev/md127 does not appear to be an md device\n"}},
		{name: "held open", sysfs: func(t *testing.T, root string) { installSysfs(t, root, "raid1-clean", "") },
			step: &mdadmStep{args: stop, fixture: "stop-busy"}, wantErr: ErrBusy},
		{name: "unreadable sysfs still tries", sysfs: func(t *testing.T, root string) {
			installSysfs(t, root, "raid1-clean", "")
			writeSysFile(t, root, "block/md127/md/raid_disks", "x")
		}, step: &mdadmStep{args: stop, fixture: "stop"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := sysRoot(t)
			if tt.sysfs != nil {
				tt.sysfs(t, root)
			}
			var steps []mdadmStep
			if tt.step != nil {
				steps = append(steps, *tt.step)
			}
			m := NewManager(newFakeMdadm(t, steps...), root)
			wantError(t, m.Stop(context.Background(), "/dev/md127"), tt.wantErr, "/dev/md127")
		})
	}
	t.Run("bad device", func(t *testing.T) {
		m := NewManager(newFakeMdadm(t), sysRoot(t))
		wantError(t, m.Stop(context.Background(), "/dev/sda"), ErrInvalidArgument)
	})
}

func TestMemberOperations(t *testing.T) {
	ctx := context.Background()
	type op func(m *Manager, device, member string) error
	add := func(m *Manager, d, mem string) error { return m.Add(ctx, d, mem) }
	reAdd := func(m *Manager, d, mem string) error { return m.ReAdd(ctx, d, mem) }
	fail := func(m *Manager, d, mem string) error { return m.Fail(ctx, d, mem) }
	remove := func(m *Manager, d, mem string) error { return m.Remove(ctx, d, mem) }
	tests := []struct {
		name     string
		op       op
		member   string
		step     *mdadmStep
		wantErr  error
		mentions []string
	}{
		{name: "add with failfast", op: add, member: "/dev/nvme1n1",
			step: &mdadmStep{args: []string{"/dev/md127", "--add", "--failfast", "/dev/nvme1n1"}, fixture: "add"}},
		{name: "add to a failed array", op: add, member: "/dev/nvme1n1",
			step: &mdadmStep{args: []string{"/dev/md127", "--add", "--failfast", "/dev/nvme1n1"}, exit: 1,
				stderr: "mdadm: /dev/md127 has failed so using --add cannot work and might destroy\nmdadm: data on /dev/nvme1n1.  You should stop the array and re-assemble it.\n"},
			wantErr: ErrWouldFailArray},
		{name: "add a too small device", op: add, member: "/dev/nvme1n1",
			step: &mdadmStep{args: []string{"/dev/md127", "--add", "--failfast", "/dev/nvme1n1"}, exit: 1,
				stderr: "mdadm: /dev/nvme1n1 not large enough to join array\n"},
			wantErr: ErrInvalidArgument},
		{name: "add a missing device", op: add, member: "/dev/nvme9n9",
			step: &mdadmStep{args: []string{"/dev/md127", "--add", "--failfast", "/dev/nvme9n9"}, exit: 1,
				stderr: "mdadm: Cannot open /dev/nvme9n9: No such file or directory\n"},
			wantErr: ErrNotFound},
		{name: "add by kernel name refused", op: add, member: "nvme1n1", wantErr: ErrInvalidArgument},
		{name: "re-add", op: reAdd, member: "/dev/nvme2n1",
			step: &mdadmStep{args: []string{"/dev/md127", "--re-add", "/dev/nvme2n1"}, fixture: "re-add"}},
		{name: "re-add refused", op: reAdd, member: "/dev/nvme3n1",
			step:    &mdadmStep{args: []string{"/dev/md127", "--re-add", "/dev/nvme3n1"}, fixture: "re-add-never-member"},
			wantErr: ErrReAddRefused, mentions: []string{"/dev/nvme3n1", "/dev/md127"}},
		{name: "re-add missing keyword refused", op: reAdd, member: "missing", wantErr: ErrInvalidArgument},
		{name: "fail", op: fail, member: "/dev/nvme2n1",
			step: &mdadmStep{args: []string{"/dev/md127", "--fail", "/dev/nvme2n1"}, fixture: "fail"}},
		{name: "fail by kernel name", op: fail, member: "nvme3n1",
			step: &mdadmStep{args: []string{"/dev/md127", "--fail", "nvme3n1"}, fixture: "fail-kernel-name"}},
		{name: "fail detached", op: fail, member: "detached",
			step: &mdadmStep{args: []string{"/dev/md127", "--fail", "detached"}, fixture: "fail-detached"}},
		{name: "fail the last member", op: fail, member: "/dev/ram1",
			step:    &mdadmStep{args: []string{"/dev/md127", "--fail", "/dev/ram1"}, fixture: "fail-last-member"},
			wantErr: ErrWouldFailArray, mentions: []string{"/dev/ram1"}},
		{name: "fail the last member, newer mdadm", op: fail, member: "/dev/ram1",
			step: &mdadmStep{args: []string{"/dev/md127", "--fail", "/dev/ram1"}, exit: 1,
				stderr: "mdadm: Cannot remove /dev/ram1 from /dev/md127, array will be failed.\n"},
			wantErr: ErrWouldFailArray},
		{name: "fail a non-member by kernel name", op: fail, member: "nvme7n1",
			step: &mdadmStep{args: []string{"/dev/md127", "--fail", "nvme7n1"}, exit: 1,
				stderr: "mdadm: nvme7n1 does not appear to be a component of /dev/md127\n"},
			wantErr: ErrNotFound},
		{name: "fail failed keyword refused", op: fail, member: "failed", wantErr: ErrInvalidArgument},
		{name: "fail set keyword refused", op: fail, member: "set-A", wantErr: ErrInvalidArgument},
		{name: "fail major:minor refused", op: fail, member: "259:5", wantErr: ErrInvalidArgument},
		{name: "fail option-like refused", op: fail, member: "-f", wantErr: ErrInvalidArgument},
		{name: "remove failed", op: remove, member: "failed",
			step: &mdadmStep{args: []string{"/dev/md127", "--remove", "failed"}, fixture: "remove-failed"}},
		{name: "remove failed when none is", op: remove, member: "failed",
			step: &mdadmStep{args: []string{"/dev/md127", "--remove", "failed"}, fixture: "remove-failed-none"}},
		{name: "remove detached", op: remove, member: "detached",
			step: &mdadmStep{args: []string{"/dev/md127", "--remove", "detached"}, fixture: "remove-detached"}},
		{name: "remove by kernel name", op: remove, member: "nvme3n1",
			step: &mdadmStep{args: []string{"/dev/md127", "--remove", "nvme3n1"}, fixture: "remove-kernel-name"}},
		{name: "remove an active member", op: remove, member: "/dev/nvme0n1",
			step:    &mdadmStep{args: []string{"/dev/md127", "--remove", "/dev/nvme0n1"}, fixture: "remove-active-member"},
			wantErr: ErrBusy, mentions: []string{"/dev/nvme0n1"}},
		{name: "remove a non-member", op: remove, member: "/dev/nvme7n1",
			step: &mdadmStep{args: []string{"/dev/md127", "--remove", "/dev/nvme7n1"}, exit: 1,
				stderr: "mdadm: hot remove failed for /dev/nvme7n1: No such device or address\n"},
			wantErr: ErrNotFound},
		{name: "remove faulty keyword refused", op: remove, member: "faulty", wantErr: ErrInvalidArgument},
		{name: "remove path outside /dev refused", op: remove, member: "/tmp/x", wantErr: ErrInvalidArgument},
		{name: "remove empty refused", op: remove, member: "", wantErr: ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var steps []mdadmStep
			if tt.step != nil {
				steps = append(steps, *tt.step)
			}
			m := NewManager(newFakeMdadm(t, steps...), sysRoot(t))
			wantError(t, tt.op(m, "/dev/md127", tt.member), tt.wantErr, tt.mentions...)
		})
	}
	for name, o := range map[string]op{"add": add, "re-add": reAdd, "fail": fail, "remove": remove} {
		t.Run(name+" on a bad device", func(t *testing.T) {
			m := NewManager(newFakeMdadm(t), sysRoot(t))
			wantError(t, o(m, "/dev/nvme0n1", "/dev/nvme1n1"), ErrInvalidArgument)
		})
	}
}

func TestGrowSize(t *testing.T) {
	grow := []string{"--grow", "/dev/md127", "--size=max"}
	tests := []struct {
		name    string
		step    mdadmStep
		wantErr error
	}{
		{name: "nothing to grow", step: mdadmStep{args: grow, fixture: "grow-unchanged"}},
		{name: "array gone", step: mdadmStep{args: grow, exit: 1, stderr: "mdadm: cannot open /dev/md127: No such file or directory\n"}, wantErr: ErrNotFound},
		// Seen in the VM: a grow right after create, during the resync.
		{name: "during resync", step: mdadmStep{args: grow, exit: 1, stderr: "mdadm: /dev/md127 is performing resync/recovery and cannot be reshaped\n"}, wantErr: ErrSyncInProgress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewManager(newFakeMdadm(t, tt.step), sysRoot(t))
			wantError(t, m.GrowSize(context.Background(), "/dev/md127"), tt.wantErr)
		})
	}
}

func TestExamine(t *testing.T) {
	examine := func(dev string) []string { return []string{"--examine", "--export", dev} }
	tests := []struct {
		name    string
		member  string
		step    *mdadmStep
		want    Superblock
		wantErr error
	}{
		{name: "member", member: "/dev/nvme0n1", step: &mdadmStep{args: examine("/dev/nvme0n1"), fixture: "examine"},
			want: Superblock{UUID: "8b298196:48aa4550:d7d4d20e:9af2a785", Name: "vol-a", HomeHost: "any", Level: "raid1",
				RaidDevices: 3, DeviceUUID: "6dcc89c5:49e0a5ba:c52c10f1:4f2fffb4"}},
		{name: "blank device", member: "/dev/nvme0n1", step: &mdadmStep{args: examine("/dev/nvme0n1"), fixture: "examine-no-superblock"}, wantErr: ErrNoSuperblock},
		{name: "missing device", member: "/dev/nvme9n9", step: &mdadmStep{args: examine("/dev/nvme9n9"), fixture: "examine-no-device"}, wantErr: ErrNotFound},
		{name: "superblock mdadm cannot load", member: "/dev/nvme0n1", step: &mdadmStep{args: examine("/dev/nvme0n1"),
			stderr: "mdadm: No super block found on /dev/nvme0n1 (Expected magic a92b4efc, got 00000000)\n"}, wantErr: ErrNoSuperblock},
		{name: "kernel name refused", member: "nvme0n1", wantErr: ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var steps []mdadmStep
			if tt.step != nil {
				steps = append(steps, *tt.step)
			}
			sb, err := NewManager(newFakeMdadm(t, steps...), sysRoot(t)).Examine(context.Background(), tt.member)
			wantError(t, err, tt.wantErr, tt.member)
			if tt.wantErr == nil && sb != tt.want {
				t.Errorf("got  %+v\nwant %+v", sb, tt.want)
			}
		})
	}
}

func TestDetail(t *testing.T) {
	detail := []string{"--detail", "--export", "/dev/md127"}
	t.Run("running array", func(t *testing.T) {
		d, err := NewManager(newFakeMdadm(t, mdadmStep{args: detail, fixture: "detail-clean"}), sysRoot(t)).Detail(context.Background(), "/dev/md127")
		if err != nil || d.UUID != "8b298196:48aa4550:d7d4d20e:9af2a785" || d.Name != "vol-a" || len(d.Members) != 3 {
			t.Fatalf("got %+v, %v", d, err)
		}
	})
	t.Run("uuid from sysfs when mdadm has no map entry", func(t *testing.T) {
		root := sysRoot(t)
		installSysfs(t, root, "raid1-clean", "")
		d, err := NewManager(newFakeMdadm(t, mdadmStep{args: detail, stdout: "MD_LEVEL=raid1\nMD_DEVICES=3\nMD_METADATA=1.2\n"}), root).Detail(context.Background(), "/dev/md127")
		if err != nil || d.UUID != "8b298196:48aa4550:d7d4d20e:9af2a785" {
			t.Fatalf("got %+v, %v", d, err)
		}
	})
	t.Run("missing array", func(t *testing.T) {
		_, err := NewManager(newFakeMdadm(t, mdadmStep{args: detail, fixture: "detail-no-device"}), sysRoot(t)).Detail(context.Background(), "/dev/md127")
		wantError(t, err, ErrNotFound, "/dev/md127")
	})
	t.Run("garbled output", func(t *testing.T) {
		_, err := NewManager(newFakeMdadm(t, mdadmStep{args: detail, stdout: "MD_DEVICES=three\n"}), sysRoot(t)).Detail(context.Background(), "/dev/md127")
		wantError(t, err, ErrMalformed, "/dev/md127")
	})
}

// recordAllMdadm answers every mdadm run with success and records its argv;
// --examine and --detail get real outputs so that their callers parse them.
func recordAllMdadm(t *testing.T, argvs *[][]string) *testingexec.FakeExec {
	t.Helper()
	examineOut, _, _ := loadMdadmFixture(t, "examine")
	detailOut, _, _ := loadMdadmFixture(t, "detail-clean")
	fe := &testingexec.FakeExec{}
	for range 200 {
		fe.CommandScript = append(fe.CommandScript, func(cmd string, args ...string) exec.Cmd {
			argv := append([]string{cmd}, args...)
			*argvs = append(*argvs, argv)
			var out []byte
			switch {
			case slices.Contains(args, "--examine"):
				out = examineOut
			case slices.Contains(args, "--detail"):
				out = detailOut
			}
			return &testingexec.FakeCmd{Argv: argv, RunScript: []testingexec.FakeAction{func() ([]byte, []byte, error) { return out, nil, nil }}}
		})
	}
	return fe
}

// No method may ever hand mdadm --force (or a short option, some of which
// mean --force in some modes), whatever it is asked to do.
func TestNoMethodEverPassesForce(t *testing.T) {
	var argvs [][]string
	root := sysRoot(t)
	installSysfs(t, root, "raid1-clean", "md126")
	m := NewManager(recordAllMdadm(t, &argvs), root)
	ctx := context.Background()
	devs := []string{"/dev/nvme0n1", "/dev/nvme1n1", "/dev/nvme2n1", "/dev/nvme3n1"}
	for n := 1; n <= len(devs); n++ {
		for _, clean := range []bool{false, true} {
			_ = m.Create(ctx, CreateOptions{Device: "/dev/md127", Name: "vol", Devices: devs[:n], BitmapChunk: 1 << 20, AssumeClean: clean})
		}
	}
	spares := []string{"/dev/nvme4n1", "/dev/nvme5n1"}
	_ = m.Assemble(ctx, "/dev/md127", "01234567:89abcdef:01234567:89abcdef", spares)
	_ = m.Assemble(ctx, "/dev/md127", "01234567-89ab-cdef-0123-456789abcdef", spares[:1])
	_ = m.Stop(ctx, "/dev/md126")
	for _, member := range []string{"/dev/nvme0n1", "nvme0n1", "failed", "detached", "missing", "--force", "-f"} {
		_ = m.Add(ctx, "/dev/md126", member)
		_ = m.ReAdd(ctx, "/dev/md126", member)
		_ = m.Fail(ctx, "/dev/md126", member)
		_ = m.Remove(ctx, "/dev/md126", member)
		_, _ = m.Examine(ctx, member)
	}
	_ = m.GrowSize(ctx, "/dev/md126")
	_ = m.SetRaidDevices(ctx, "/dev/md126", 2)
	_, _ = m.Detail(ctx, "/dev/md126")
	modes := map[string]bool{}
	for _, argv := range argvs {
		for _, a := range argv[1:] {
			if strings.HasPrefix(a, "--force") || (strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--")) {
				t.Errorf("mdadm ran with %q: %q", a, argv)
			}
			if strings.HasPrefix(a, "--") {
				modes[strings.SplitN(a, "=", 2)[0]] = true
			}
		}
	}
	for _, mode := range []string{"--create", "--assemble", "--stop", "--add", "--re-add", "--fail", "--remove", "--grow", "--examine", "--detail"} {
		if !modes[mode] {
			t.Errorf("no run used %s, so the scan did not cover it", mode)
		}
	}
}

func TestRunRefusesForceAndShortOptions(t *testing.T) {
	for _, bad := range []string{"--force", "--force=yes", "-f", "-Rf", "-"} {
		t.Run(bad, func(t *testing.T) {
			m := NewManager(newFakeMdadm(t), sysRoot(t))
			_, err := m.run(context.Background(), "--assemble", "/dev/md127", bad)
			wantError(t, err, ErrInvalidArgument, bad)
		})
	}
}

func TestRunFailures(t *testing.T) {
	args := []string{"--detail", "--export", "/dev/md127"}
	t.Run("exit status and stderr are kept", func(t *testing.T) {
		m := NewManager(newFakeMdadm(t, mdadmStep{args: args, exit: 1, stderr: "mdadm: cannot open /dev/md127: No such file or directory\n"}), sysRoot(t))
		_, err := m.Detail(context.Background(), "/dev/md127")
		var ce *CommandError
		if !errors.As(err, &ce) || ce.ExitCode != 1 || ce.Stderr != "mdadm: cannot open /dev/md127: No such file or directory" {
			t.Fatalf("got %#v", err)
		}
		if want := "mdadm --detail --export /dev/md127: exit 1: mdadm: cannot open"; !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	})
	t.Run("mdadm not installed", func(t *testing.T) {
		m := NewManager(newFakeMdadm(t, mdadmStep{args: args, runErr: exec.ErrExecutableNotFound}), sysRoot(t))
		_, err := m.Detail(context.Background(), "/dev/md127")
		var ce *CommandError
		if !errors.Is(err, exec.ErrExecutableNotFound) || !errors.As(err, &ce) || ce.ExitCode != -1 {
			t.Fatalf("got %v", err)
		}
		if errors.Is(err, ErrNotFound) {
			t.Errorf("a missing mdadm must not read as a missing array: %v", err)
		}
	})
	t.Run("context cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		m := NewManager(newFakeMdadm(t, mdadmStep{args: args, exit: 1, stderr: "mdadm: cannot open /dev/md127: No such file or directory"}), sysRoot(t))
		_, err := m.Detail(ctx, "/dev/md127")
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrNotFound) {
			t.Fatalf("got %v, want context.Canceled only", err)
		}
	})
}

func TestNewManagerRoot(t *testing.T) {
	for _, root := range []string{"", "/"} {
		if got := NewManager(nil, root).sysPath("block"); got != "/sys/block" {
			t.Errorf("root %q: sysfs at %s", root, got)
		}
	}
	if got := NewManager(nil, "/tmp/x").procPath("mdstat"); got != "/tmp/x/proc/mdstat" {
		t.Errorf("procfs at %s", got)
	}
}

func TestSetRaidDevices(t *testing.T) {
	args := []string{"--grow", "/dev/md127", "--raid-devices=2"}
	tests := []struct {
		name    string
		n       int
		step    *mdadmStep
		wantErr error
	}{
		{name: "shrink after a deletion", n: 2, step: &mdadmStep{args: args}},
		{name: "more members than slots", n: 2, step: &mdadmStep{args: args, exit: 1, stderr: "mdadm: Cannot set raid-devices for /dev/md127: Device or resource busy\n"}, wantErr: ErrBusy},
		{name: "zero", n: 0, wantErr: ErrInvalidArgument},
		{name: "five", n: 5, wantErr: ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var steps []mdadmStep
			if tt.step != nil {
				steps = append(steps, *tt.step)
			}
			m := NewManager(newFakeMdadm(t, steps...), sysRoot(t))
			wantError(t, m.SetRaidDevices(context.Background(), "/dev/md127", tt.n), tt.wantErr)
		})
	}
}
