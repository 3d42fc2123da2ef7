package mdraid

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// sysfsFixture reads testdata/sysfs/NAME.txt: path=value lines captured from
// /sys/block on a real kernel, with newlines in values written as \n.
func sysfsFixture(t testing.TB, name string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "sysfs", name+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	attrs := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		path, value, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			t.Fatalf("sysfs fixture %s: line %q has no '='", name, sc.Text())
		}
		attrs[path] = strings.ReplaceAll(value, `\n`, "\n")
	}
	return attrs
}

// installSysfs writes a fixture under root/sys/block, renamed to array as
// when as is not empty, so that a test can compose several arrays.
func installSysfs(t testing.TB, root, fixture, as string) {
	t.Helper()
	for path, value := range sysfsFixture(t, fixture) {
		if as != "" {
			_, rest, _ := strings.Cut(path, "/")
			path = as + "/" + rest
		}
		writeSysFile(t, root, "block/"+path, value)
	}
}

// writeSysFile writes root/sys/rel with a trailing newline, as sysfs shows.
func writeSysFile(t testing.TB, root, rel, value string) {
	t.Helper()
	p := filepath.Join(root, "sys", rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(value+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// sysRoot returns a temporary root with an empty /sys/block.
func sysRoot(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "sys", "block"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// arraySummary renders the fields a healer decides on in one line.
func arraySummary(a Array) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s uuid=%s %s disks=%d degraded=%d action=%s sync=%s",
		a.Name, a.Device, a.Level, a.UUID, a.ArrayState, a.RaidDisks, a.Degraded, a.SyncAction, a.SyncCompleted.State)
	if a.SyncCompleted.State == "progress" {
		fmt.Fprintf(&b, "(%d/%d)", a.SyncCompleted.Done, a.SyncCompleted.Total)
	}
	fmt.Fprintf(&b, " mismatch=%d size=%d", a.MismatchCount, a.SizeKiB)
	for _, m := range a.Members {
		fmt.Fprintf(&b, " %s:%d:%s:%d", m.Device, m.Slot, m.State.Raw, m.Errors)
	}
	return b.String()
}

func TestReadArray(t *testing.T) {
	const vol = "8b298196:48aa4550:d7d4d20e:9af2a785"
	tests := []struct {
		fixture string
		name    string
		want    string
	}{
		{"raid1-clean", "md127", "md127 /dev/md127 raid1 uuid=" + vol + " clean disks=3 degraded=0 action=idle sync=none mismatch=0 size=39936 nvme0n1:0:in_sync,failfast:0 nvme1n1:1:in_sync,failfast:0 nvme2n1:2:in_sync,failfast:0"},
		{"raid1-degraded-faulty", "md127", "md127 /dev/md127 raid1 uuid=" + vol + " active disks=3 degraded=1 action=idle sync=none mismatch=0 size=39936 nvme0n1:0:in_sync,failfast:0 nvme1n1:1:in_sync,failfast:0 nvme2n1:-1:faulty,failfast:0"},
		{"raid1-degraded-removed", "md127", "md127 /dev/md127 raid1 uuid=" + vol + " clean disks=3 degraded=1 action=idle sync=none mismatch=0 size=39936 nvme0n1:0:in_sync,failfast:0 nvme1n1:1:in_sync,failfast:0"},
		{"raid1-recovery", "md127", "md127 /dev/md127 raid1 uuid=" + vol + " clean disks=3 degraded=1 action=recover sync=progress(0/79872) mismatch=0 size=39936 nvme0n1:0:in_sync,failfast:0 nvme1n1:1:spare,failfast:0 nvme2n1:2:in_sync,failfast:0"},
		{"raid1-check", "md127", "md127 /dev/md127 raid1 uuid=" + vol + " clean disks=3 degraded=0 action=check sync=progress(0/79872) mismatch=0 size=39936 nvme0n1:0:in_sync,failfast:0 nvme1n1:1:in_sync,failfast:0 nvme2n1:2:in_sync,failfast:0"},
		{"raid1-spare", "md127", "md127 /dev/md127 raid1 uuid=" + vol + " clean disks=3 degraded=0 action=idle sync=none mismatch=0 size=39936 nvme0n1:0:in_sync,failfast:0 nvme1n1:1:in_sync,failfast:0 nvme2n1:2:in_sync,failfast:0 nvme3n1:-1:spare,failfast:0"},
		{"raid1-target-lost", "md127", "md127 /dev/md127 raid1 uuid=" + vol + " clean disks=3 degraded=1 action=idle sync=none mismatch=0 size=39936 nvme0n1:0:in_sync,failfast:0 nvme1n1:1:in_sync,failfast:0 nvme2n1:-1:faulty,failfast:0"},
		{"raid1-broken", "md126", "md126 /dev/md126 raid1 uuid=c8ad6629:75e79826:05feaa09:676c08f9 broken disks=2 degraded=1 action=idle sync=none mismatch=0 size=15360 ram0:-1:faulty:0 ram1:1:in_sync,write_mostly:0"},
		{"raid1-write-mostly", "md126", "md126 /dev/md126 raid1 uuid=c8ad6629:75e79826:05feaa09:676c08f9 clean disks=2 degraded=0 action=idle sync=none mismatch=0 size=15360 ram0:0:in_sync:0 ram1:1:in_sync,write_mostly:0"},
		{"raid1-resync", "md123", "md123 /dev/md123 raid1 uuid=d285eba6:2dc5d471:ff1bc5f5:91ad1c82 clean disks=2 degraded=0 action=resync sync=progress(0/47104) mismatch=0 size=23552 loop5p1:0:in_sync:0 loop6p1:1:in_sync:0"},
		{"raid1-resync-delayed", "md122", "md122 /dev/md122 raid1 uuid=75274a51:767610fc:7c684e0c:7779f6cb clean disks=2 degraded=0 action=resync sync=delayed mismatch=0 size=23552 loop5p2:0:in_sync:0 loop6p2:1:in_sync:0"},
		{"raid1-read-auto-pending", "md122", "md122 /dev/md122 raid1 uuid=75274a51:767610fc:7c684e0c:7779f6cb read-auto disks=2 degraded=0 action=idle sync=none mismatch=0 size=23552 loop5p2:0:in_sync:0 loop6p2:1:in_sync:0"},
		{"raid0", "md125", "md125 /dev/md125 raid0 uuid=9634531d:39a7d780:14b34d66:cb80b036 clean disks=2 degraded=0 action= sync=none mismatch=0 size=0 ram2:0:in_sync:0 ram3:1:in_sync:0"},
		{"raid10", "md124", "md124 /dev/md124 raid10 uuid=9bc6b009:937afedf:c55ca78c:81702798 clean disks=4 degraded=0 action=idle sync=none mismatch=0 size=14336 ram4:0:in_sync:0 ram5:1:in_sync:0 ram6:2:in_sync:0 ram7:3:in_sync:0"},
		// Before its first start an array has no level, raid_disks or UUID.
		{"inactive", "md124", "md124 /dev/md124  uuid= inactive disks=0 degraded=0 action= sync=none mismatch=0 size=14336 ram4:-1:spare:0"},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			root := sysRoot(t)
			installSysfs(t, root, tt.fixture, "")
			a, err := NewManager(nil, root).ReadArray(tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if got := arraySummary(a); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestReadArrayFlagsOfRecoveringMember(t *testing.T) {
	root := sysRoot(t)
	installSysfs(t, root, "raid1-recovery", "")
	a, err := NewManager(nil, root).ReadArray("md127")
	if err != nil {
		t.Fatal(err)
	}
	m, ok := a.Member("/dev/nvme1n1")
	if !ok {
		t.Fatal("member nvme1n1 not found")
	}
	want := Member{Name: "dev-nvme1n1", Device: "nvme1n1", Slot: 1, State: MemberState{Spare: true, Failfast: true, Raw: "spare,failfast"}}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("got  %+v\nwant %+v", m, want)
	}
	if !a.IsDegraded() {
		t.Error("an array recovering a member is degraded")
	}
}

func TestReadArrayErrors(t *testing.T) {
	tests := []struct {
		name    string
		array   string
		edit    func(t *testing.T, root string)
		wantErr error
	}{
		{name: "not an md name", array: "sda", wantErr: ErrInvalidArgument},
		{name: "path in name", array: "md127/../md1", wantErr: ErrInvalidArgument},
		{name: "absent", array: "md1", wantErr: ErrNotFound},
		{name: "block device without md directory", array: "md1", edit: func(t *testing.T, root string) {
			writeSysFile(t, root, "block/md1/size", "0")
		}, wantErr: ErrNotFound},
		{name: "raid_disks not a number", array: "md127", edit: func(t *testing.T, root string) {
			writeSysFile(t, root, "block/md127/md/raid_disks", "three")
		}, wantErr: ErrMalformed},
		{name: "sync_completed garbled", array: "md127", edit: func(t *testing.T, root string) {
			writeSysFile(t, root, "block/md127/md/sync_completed", "12 of 40")
		}, wantErr: ErrMalformed},
		{name: "slot garbled", array: "md127", edit: func(t *testing.T, root string) {
			writeSysFile(t, root, "block/md127/md/dev-nvme0n1/slot", "first")
		}, wantErr: ErrMalformed},
		{name: "uuid garbled", array: "md127", edit: func(t *testing.T, root string) {
			writeSysFile(t, root, "block/md127/md/uuid", "not-a-uuid")
		}, wantErr: ErrMalformed},
		{name: "errors garbled", array: "md127", edit: func(t *testing.T, root string) {
			writeSysFile(t, root, "block/md127/md/dev-nvme0n1/errors", "-1")
		}, wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := sysRoot(t)
			installSysfs(t, root, "raid1-clean", "")
			if tt.edit != nil {
				tt.edit(t, root)
			}
			_, err := NewManager(nil, root).ReadArray(tt.array)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// A member directory that vanishes mid-read (md removed it) is skipped, and
// a reshape that changes the disk count ("3 (2)") still gives a count.
func TestReadArrayToleratesKernelRaces(t *testing.T) {
	root := sysRoot(t)
	installSysfs(t, root, "raid1-clean", "")
	if err := os.MkdirAll(filepath.Join(root, "sys/block/md127/md/dev-nvme9n1"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeSysFile(t, root, "block/md127/md/raid_disks", "3 (2)")
	a, err := NewManager(nil, root).ReadArray("md127")
	if err != nil {
		t.Fatal(err)
	}
	if a.RaidDisks != 3 || len(a.Members) != 3 {
		t.Errorf("raid disks %d, members %d; want 3 and 3", a.RaidDisks, len(a.Members))
	}
}

func TestParseMemberState(t *testing.T) {
	tests := []struct {
		in   string
		want MemberState
	}{
		{"in_sync,failfast\n", MemberState{InSync: true, Failfast: true, Raw: "in_sync,failfast"}},
		{"faulty,failfast", MemberState{Faulty: true, Failfast: true, Raw: "faulty,failfast"}},
		{"spare", MemberState{Spare: true, Raw: "spare"}},
		{"in_sync,write_mostly", MemberState{InSync: true, WriteMostly: true, Raw: "in_sync,write_mostly"}},
		{"faulty,in_sync,journal,write_mostly,blocked,spare,write_error,want_replacement,replacement,external_bbl,failfast",
			MemberState{InSync: true, Faulty: true, WriteMostly: true, Spare: true, Failfast: true, Blocked: true, WriteError: true,
				WantReplacement: true, Replacement: true, Journal: true, ExternalBBL: true,
				Raw: "faulty,in_sync,journal,write_mostly,blocked,spare,write_error,want_replacement,replacement,external_bbl,failfast"}},
		{"in_sync,some_future_flag", MemberState{InSync: true, Raw: "in_sync,some_future_flag"}},
		{"", MemberState{}},
		{"in_syncx", MemberState{Raw: "in_syncx"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := ParseMemberState(tt.in); got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseSyncCompleted(t *testing.T) {
	tests := []struct {
		in      string
		want    SyncProgress
		wantErr bool
	}{
		{in: "none\n", want: SyncProgress{State: "none"}},
		{in: "delayed\n", want: SyncProgress{State: "delayed"}},
		{in: "pending", want: SyncProgress{State: "pending"}},
		{in: "0 / 79872\n", want: SyncProgress{State: "progress", Total: 79872}},
		{in: "79872 / 79872", want: SyncProgress{State: "progress", Done: 79872, Total: 79872}},
		{in: "79873 / 79872", wantErr: true},
		{in: "1/2", wantErr: true},
		{in: "-1 / 2", wantErr: true},
		{in: "1 / 2 / 3", wantErr: true},
		{in: "18446744073709551616 / 1", wantErr: true},
		{in: "", wantErr: true},
		{in: "idle", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSyncCompleted(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("got %+v, %v; want ErrMalformed", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestArrayMember(t *testing.T) {
	a := Array{Members: []Member{{Name: "dev-nvme1n1", Device: "nvme1n1", Slot: 0}}}
	for _, name := range []string{"nvme1n1", "/dev/nvme1n1", "dev-nvme1n1"} {
		if m, ok := a.Member(name); !ok || m.Device != "nvme1n1" {
			t.Errorf("Member(%q) = %+v, %v", name, m, ok)
		}
	}
	for _, name := range []string{"nvme1n", "nvme1n1p1", "/dev/nvme2n1", ""} {
		if _, ok := a.Member(name); ok {
			t.Errorf("Member(%q) found a member", name)
		}
	}
}

func TestListArrays(t *testing.T) {
	root := sysRoot(t)
	installSysfs(t, root, "raid1-clean", "")
	installSysfs(t, root, "raid0", "")
	installSysfs(t, root, "inactive", "")
	installSysfs(t, root, "raid1-write-mostly", "md9")
	writeSysFile(t, root, "block/md2/md/array_state", "clear")
	writeSysFile(t, root, "block/nvme0n1/size", "81920")
	writeSysFile(t, root, "block/md_d0/size", "0")
	arrays, err := NewManager(nil, root).ListArrays()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range arrays {
		got = append(got, a.Name+"="+a.ArrayState)
	}
	want := []string{"md2=clear", "md9=clean", "md124=inactive", "md125=clean", "md127=clean"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestListArraysWithoutSysBlock(t *testing.T) {
	if _, err := NewManager(nil, t.TempDir()).ListArrays(); err == nil {
		t.Fatal("want an error when /sys/block is missing")
	}
}

func TestFindByUUID(t *testing.T) {
	root := sysRoot(t)
	installSysfs(t, root, "raid1-clean", "")
	installSysfs(t, root, "inactive", "")
	installSysfs(t, root, "raid0", "")
	m := NewManager(nil, root)
	tests := []struct {
		name       string
		uuid       string
		wantDevice string
		wantErr    error
	}{
		{name: "mdadm form", uuid: "8b298196:48aa4550:d7d4d20e:9af2a785", wantDevice: "/dev/md127"},
		{name: "sysfs form", uuid: "8b298196-48aa-4550-d7d4-d20e9af2a785", wantDevice: "/dev/md127"},
		{name: "other level", uuid: "9634531d:39a7d780:14b34d66:cb80b036", wantDevice: "/dev/md125"},
		{name: "unknown", uuid: "8b298196:48aa4550:d7d4d20e:9af2a786", wantErr: ErrNotFound},
		{name: "zero matches no inactive array", uuid: zeroUUID, wantErr: ErrNotFound},
		{name: "invalid", uuid: "vol-a", wantErr: ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := m.FindByUUID(tt.uuid)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %s, %v; want %v", a.Device, err, tt.wantErr)
				}
				return
			}
			if err != nil || a.Device != tt.wantDevice {
				t.Fatalf("got %q, %v; want %s", a.Device, err, tt.wantDevice)
			}
		})
	}
}

// On kernels without md/uuid, FindByUUID asks mdadm about running arrays,
// never about inactive or unconfigured ones.
func TestFindByUUIDFallsBackToMdadm(t *testing.T) {
	root := sysRoot(t)
	installSysfs(t, root, "raid1-clean", "")
	installSysfs(t, root, "inactive", "")
	writeSysFile(t, root, "block/md2/md/array_state", "clear")
	for _, md := range []string{"md127", "md124"} {
		if err := os.Remove(filepath.Join(root, "sys/block", md, "md/uuid")); err != nil {
			t.Fatal(err)
		}
	}
	ex := newFakeMdadm(t, mdadmStep{args: []string{"--detail", "--export", "/dev/md127"}, fixture: "detail-clean"})
	a, err := NewManager(ex, root).FindByUUID("8b298196-48aa-4550-d7d4-d20e9af2a785")
	if err != nil || a.Device != "/dev/md127" || a.UUID != "8b298196:48aa4550:d7d4d20e:9af2a785" {
		t.Fatalf("got %s %s, %v", a.Device, a.UUID, err)
	}
}

func TestArrayHolding(t *testing.T) {
	root := sysRoot(t)
	installSysfs(t, root, "raid1-clean", "")
	installSysfs(t, root, "inactive", "")
	byID := filepath.Join(root, "dev", "disk", "by-id")
	if err := os.MkdirAll(byID, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "dev", "ram4"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../ram4", filepath.Join(byID, "ram-4")); err != nil {
		t.Fatal(err)
	}
	m := NewManager(nil, root)
	tests := []struct {
		device  string
		want    string
		wantErr error
	}{
		{device: "/dev/ram4", want: "md124"},
		{device: "ram4", want: "md124"},
		{device: "/dev/disk/by-id/ram-4", want: "md124"},
		{device: "/dev/nvme1n1", want: "md127"},
		{device: "/dev/nvme3n1", wantErr: ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.device, func(t *testing.T) {
			a, err := m.ArrayHolding(tt.device)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %s, %v; want %v", a.Name, err, tt.wantErr)
				}
				return
			}
			if err != nil || a.Name != tt.want {
				t.Fatalf("got %q, %v; want %s", a.Name, err, tt.want)
			}
		})
	}
}

func TestNextFreeDevice(t *testing.T) {
	taken := func(ns ...int) []string {
		var names []string
		for _, n := range ns {
			names = append(names, fmt.Sprintf("md%d", n))
		}
		return names
	}
	var allLow []int
	for n := 0; n <= 127; n++ {
		allLow = append(allLow, n)
	}
	var all []int
	for n := 0; n <= 511; n++ {
		all = append(all, n)
	}
	tests := []struct {
		name    string
		taken   []string
		want    string
		wantErr error
	}{
		{name: "none taken", want: "/dev/md127"},
		{name: "top taken", taken: taken(127, 126, 100), want: "/dev/md125"},
		{name: "other devices ignored", taken: []string{"nvme0n1", "md127p1"}, want: "/dev/md127"},
		{name: "low range full", taken: taken(allLow...), want: "/dev/md511"},
		{name: "everything full", taken: taken(all...), wantErr: ErrBusy},
		{name: "128 is not used", taken: taken(append(allLow, 511, 510)...), want: "/dev/md509"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := sysRoot(t)
			for _, n := range tt.taken {
				if err := os.Mkdir(filepath.Join(root, "sys/block", n), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			got, err := NewManager(nil, root).NextFreeDevice()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %q, %v; want %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func memberStateSeeds(f *testing.F) []string {
	matches, err := filepath.Glob(filepath.Join("testdata", "sysfs", "*.txt"))
	if err != nil || len(matches) == 0 {
		f.Fatalf("no sysfs fixtures: %v", err)
	}
	seen := map[string]bool{}
	for _, m := range matches {
		for path, value := range sysfsFixture(f, strings.TrimSuffix(filepath.Base(m), ".txt")) {
			if strings.HasSuffix(path, "/state") {
				seen[value] = true
			}
		}
	}
	var seeds []string
	for s := range seen {
		seeds = append(seeds, s)
	}
	sort.Strings(seeds)
	return seeds
}

func FuzzParseMemberState(f *testing.F) {
	for _, s := range memberStateSeeds(f) {
		f.Add(s)
	}
	f.Add("faulty,in_sync,journal,write_mostly,blocked,spare,write_error,want_replacement,replacement,external_bbl,failfast\n")
	f.Fuzz(func(t *testing.T, s string) {
		st := ParseMemberState(s)
		if st.Raw != strings.TrimSpace(s) {
			t.Fatalf("Raw %q, want the trimmed input %q", st.Raw, strings.TrimSpace(s))
		}
		if again := ParseMemberState(st.Raw); again != st {
			t.Fatalf("parsing Raw again gives %+v, want %+v", again, st)
		}
		flags := map[string]bool{}
		for _, f := range strings.Split(st.Raw, ",") {
			flags[strings.TrimSpace(f)] = true
		}
		if st.InSync != flags["in_sync"] || st.Faulty != flags["faulty"] || st.Spare != flags["spare"] || st.Failfast != flags["failfast"] {
			t.Fatalf("flags %+v disagree with the tokens of %q", st, st.Raw)
		}
	})
}

func FuzzParseSyncCompleted(f *testing.F) {
	for _, s := range []string{"none\n", "delayed\n", "pending\n", "0 / 79872\n", "1664 / 47104\n", "79872 / 79872", "2 / 1", "18446744073709551615 / 18446744073709551615"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseSyncCompleted(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		switch p.State {
		case "none", "delayed", "pending":
			if p.Done != 0 || p.Total != 0 {
				t.Fatalf("%s with numbers %+v", p.State, p)
			}
		case "progress":
			if p.Done > p.Total {
				t.Fatalf("done %d exceeds total %d", p.Done, p.Total)
			}
		default:
			t.Fatalf("unknown state %q", p.State)
		}
	})
}

// A member md removes while its directory is read is no member: seen in the
// VM as ENODEV on dev-*/state during a removal.
func TestSysfsGone(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{&fs.PathError{Op: "read", Path: "dev-nvme2n1/state", Err: syscall.ENODEV}, true},
		{fmt.Errorf("read attr: %w", &fs.PathError{Op: "open", Path: "x", Err: syscall.ENOENT}), true},
		{&fs.PathError{Op: "read", Path: "x", Err: syscall.EIO}, false},
	} {
		if got := sysfsGone(tc.err); got != tc.want {
			t.Errorf("sysfsGone(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// The rate of a running resync and its limit, as the kernel shows them
// (captured: a resync throttled by the system limit), and the writes that
// set and clear an array's own limit.
func TestSyncSpeed(t *testing.T) {
	root := sysRoot(t)
	installSysfs(t, root, "raid1-resync", "")
	m := NewManager(nil, root)
	a, err := m.ReadArray("md123")
	if err != nil {
		t.Fatal(err)
	}
	if a.SyncSpeedKiB != 256 || a.SyncSpeedMax != (SyncSpeedLimit{KiB: 200, System: true}) {
		t.Fatalf("speed %d, limit %+v: want 256 KiB/s under the system's 200", a.SyncSpeedKiB, a.SyncSpeedMax)
	}
	path := filepath.Join(root, "sys/block/md123/md/sync_speed_max")
	for kib, want := range map[uint64]string{2048: "2048", 0: "system"} {
		// sysfs replaces the value on a write; a regular file keeps the
		// old tail unless emptied first.
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
		if err := m.SetSyncSpeedMax("md123", kib); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != want {
			t.Errorf("SetSyncSpeedMax(%d) wrote %q, want %q", kib, b, want)
		}
	}
	if err := m.SetSyncSpeedMax("../x", 1); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("bad name: %v", err)
	}
	for in, want := range map[string]SyncSpeedLimit{"2048 (local)": {KiB: 2048}, "200000 (system)": {KiB: 200000, System: true}} {
		if got, err := ParseSyncSpeedLimit(in); err != nil || got != want {
			t.Errorf("ParseSyncSpeedLimit(%q) = %+v, %v", in, got, err)
		}
	}
	if _, err := ParseSyncSpeedLimit("fast"); !errors.Is(err, ErrMalformed) {
		t.Errorf("malformed: %v", err)
	}
}

// An array being stopped while another is looked up answers ENODEV or EBUSY
// before its directory goes (seen: a FindByUUID during an offline repair's
// array stop failed with "read .../md125/md/sync_speed: no such device").
func TestArrayReadErrorOfAStoppingArray(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOENT, syscall.ENODEV, syscall.EBUSY} {
		err := arrayReadError("md125", &fs.PathError{Op: "read", Path: "/sys/block/md125/md/sync_speed", Err: errno})
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "md125") {
			t.Errorf("%v: %v, want ErrNotFound naming md125", errno, err)
		}
	}
	err := arrayReadError("md125", &fs.PathError{Op: "read", Path: "/sys/block/md125/md/degraded", Err: syscall.EIO})
	if errors.Is(err, ErrNotFound) || !errors.Is(err, syscall.EIO) {
		t.Errorf("EIO: %v, want the error itself, not ErrNotFound", err)
	}
}
