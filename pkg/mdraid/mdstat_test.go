package mdraid

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// mdstatSummary renders a parsed array on one line for table tests.
func mdstatSummary(a MdstatArray) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", a.Name, a.State)
	if a.ReadOnly {
		b.WriteString(" ro")
	}
	if a.AutoReadOnly {
		b.WriteString(" auto-ro")
	}
	fmt.Fprintf(&b, " %s blocks=%d super=%s [%d/%d] [%s]", a.Level, a.Blocks, a.Super, a.RaidDisks, a.ActiveDisks, a.Status)
	for _, m := range a.Members {
		fmt.Fprintf(&b, " %s[%d]", m.Device, m.Descriptor)
		for _, f := range []struct {
			flag string
			set  bool
		}{{"W", m.WriteMostly}, {"J", m.Journal}, {"F", m.Faulty}, {"S", m.Spare}, {"R", m.Replacement}} {
			if f.set {
				fmt.Fprintf(&b, "(%s)", f.flag)
			}
		}
	}
	if s := a.Sync; s != nil {
		fmt.Fprintf(&b, " sync=%s", s.Action)
		switch {
		case s.Delayed:
			b.WriteString("=DELAYED")
		case s.Pending:
			b.WriteString("=PENDING")
		case s.Remote:
			b.WriteString("=REMOTE")
		default:
			fmt.Fprintf(&b, " %.1f%% (%d/%d) finish=%.1fmin speed=%dK", s.Percent, s.Done, s.Total, s.FinishMinutes, s.SpeedKBps)
		}
	}
	if bm := a.Bitmap; bm != nil {
		fmt.Fprintf(&b, " bitmap=%d/%d %dKB", bm.PagesUsed, bm.PagesTotal, bm.ChunkKB)
		if bm.File != "" {
			fmt.Fprintf(&b, " file=%s", bm.File)
		}
	}
	return b.String()
}

func TestParseMdstatFixtures(t *testing.T) {
	tests := []struct {
		fixture string
		want    []string
	}{
		{"empty", nil},
		{"raid1-clean-bitmap", []string{
			"md127 active raid1 blocks=39936 super=1.2 [3/3] [UUU] nvme2n1[2] nvme1n1[1] nvme0n1[0] bitmap=1/1 1024KB"}},
		{"raid1-degraded-faulty", []string{
			"md127 active raid1 blocks=39936 super=1.2 [3/2] [UU_] nvme2n1[2](F) nvme1n1[1] nvme0n1[0] bitmap=1/1 1024KB"}},
		{"raid1-degraded-removed", []string{
			"md127 active raid1 blocks=39936 super=1.2 [3/2] [UU_] nvme1n1[1] nvme0n1[0] bitmap=1/1 1024KB"}},
		{"raid1-readd-recovery", []string{
			"md127 active raid1 blocks=39936 super=1.2 [3/2] [UU_] nvme2n1[2] nvme1n1[1] nvme0n1[0] sync=recovery 15.1% (6144/39936) finish=35.2min speed=0K bitmap=1/1 1024KB"}},
		{"raid1-recovery", []string{
			"md127 active raid1 blocks=39936 super=1.2 [3/2] [U_U] nvme1n1[3] nvme2n1[2] nvme0n1[0] sync=recovery 5.0% (2048/39936) finish=0.9min speed=682K bitmap=1/1 1024KB"}},
		{"raid1-check", []string{
			"md127 active raid1 blocks=39936 super=1.2 [3/3] [UUU] nvme1n1[3] nvme2n1[2] nvme0n1[0] sync=check 5.0% (2048/39936) finish=0.9min speed=682K bitmap=0/1 1024KB"}},
		{"raid1-spare", []string{
			"md127 active raid1 blocks=39936 super=1.2 [3/3] [UUU] nvme3n1[4](S) nvme1n1[3] nvme2n1[2] nvme0n1[0] bitmap=0/1 1024KB"}},
		{"raid1-faulty-spare", []string{
			"md127 active raid1 blocks=39936 super=1.2 [3/3] [UUU] nvme3n1[4](F) nvme1n1[3] nvme2n1[2] nvme0n1[0] bitmap=0/1 1024KB"}},
		{"levels-raid0-raid10-write-mostly", []string{
			"md124 active raid10 blocks=28672 super=1.2 [4/4] [UUUU] ram7[3] ram6[2] ram5[1] ram4[0]",
			"md125 active raid0 blocks=28672 super=1.2 [0/0] [] ram3[1] ram2[0]",
			"md126 active raid1 blocks=15360 super=1.2 [2/2] [UU] ram1[1](W) ram0[0] bitmap=1/1 65536KB",
			"md127 active raid1 blocks=39936 super=1.2 [3/3] [UUU] nvme1n1[3] nvme2n1[2] nvme0n1[0] bitmap=0/1 1024KB"}},
		{"raid1-last-member-refused", []string{
			"md124 active raid10 blocks=28672 super=1.2 [4/4] [UUUU] ram7[3] ram6[2] ram5[1] ram4[0]",
			"md125 active raid0 blocks=28672 super=1.2 [0/0] [] ram3[1] ram2[0]",
			"md126 active raid1 blocks=15360 super=1.2 [2/1] [_U] ram1[1](W) ram0[0](F) bitmap=0/1 65536KB",
			"md127 active raid1 blocks=39936 super=1.2 [3/3] [UUU] nvme1n1[3] nvme2n1[2] nvme0n1[0] bitmap=0/1 1024KB"}},
		{"raid1-one-member-left", []string{
			"md120 active raid1 blocks=15360 super=1.2 [3/1] [__U] ram8[0](F) ram11[3](F) ram10[2] ram9[1](F) bitmap=0/1 1024KB",
			"md125 active raid0 blocks=28672 super=1.2 [0/0] [] ram3[1] ram2[0]",
			"md127 active raid1 blocks=39936 super=1.2 [3/2] [UU_] nvme1n1[3] nvme0n1[0] bitmap=1/1 1024KB"}},
		{"resync-delayed", []string{
			"md122 active raid1 blocks=23552 super=1.2 [2/2] [UU] loop6p2[1] loop5p2[0] sync=resync=DELAYED bitmap=1/1 65536KB",
			"md123 active raid1 blocks=23552 super=1.2 [2/2] [UU] loop6p1[1] loop5p1[0] sync=resync 4.2% (1024/23552) finish=1.0min speed=341K bitmap=1/1 65536KB",
			"md124 active raid10 blocks=28672 super=1.2 [4/4] [UUUU] ram7[3] ram6[2] ram5[1] ram4[0]",
			"md125 active raid0 blocks=28672 super=1.2 [0/0] [] ram3[1] ram2[0]",
			"md127 active raid1 blocks=39936 super=1.2 [3/3] [UUU] nvme1n1[3] nvme2n1[2] nvme0n1[0] bitmap=0/1 1024KB"}},
		{"resync-pending-auto-read-only", []string{
			"md122 active auto-ro raid1 blocks=23552 super=1.2 [2/2] [UU] loop5p2[0] loop6p2[1] sync=resync=PENDING bitmap=1/1 65536KB",
			"md123 active raid1 blocks=23552 super=1.2 [2/2] [UU] loop6p1[1] loop5p1[0] sync=resync 10.6% (2688/23552) finish=0.8min speed=384K bitmap=1/1 65536KB",
			"md124 active raid10 blocks=28672 super=1.2 [4/4] [UUUU] ram7[3] ram6[2] ram5[1] ram4[0]",
			"md125 active raid0 blocks=28672 super=1.2 [0/0] [] ram3[1] ram2[0]",
			"md127 active raid1 blocks=39936 super=1.2 [3/3] [UUU] nvme1n1[3] nvme2n1[2] nvme0n1[0] bitmap=0/1 1024KB"}},
		{"inactive", []string{
			"md124 inactive  blocks=14336 super=1.2 [0/0] [] ram4[0](S)",
			"md125 active raid0 blocks=28672 super=1.2 [0/0] [] ram3[1] ram2[0]",
			"md127 active raid1 blocks=39936 super=1.2 [3/3] [UUU] nvme1n1[3] nvme2n1[2] nvme0n1[0] bitmap=0/1 1024KB"}},
		// The real kernel after a failed assemble (mdadm left md127 with no
		// members): md_seq_show prints " super 1.2" on the array's own
		// line, as there is no blocks line to carry it.
		{"inactive-no-members", []string{
			"md126 active raid1 blocks=39936 super=1.2 [2/2] [UU] nvme1n1[1] nvme0n1[0] bitmap=0/1 1024KB",
			"md127 inactive  blocks=0 super=1.2 [0/0] []"}},
		{"raid1-target-lost", []string{
			"md125 active raid0 blocks=28672 super=1.2 [0/0] [] ram3[1] ram2[0]",
			"md127 active raid1 blocks=39936 super=1.2 [3/2] [UU_] nvme1n1[3] nvme2n1[2](F) nvme0n1[0] bitmap=1/1 1024KB"}},
		{"raid1-removed-detached", []string{
			"md125 active raid0 blocks=28672 super=1.2 [0/0] [] ram3[1] ram2[0]",
			"md127 active raid1 blocks=39936 super=1.2 [3/2] [UU_] nvme1n1[3] nvme0n1[0] bitmap=1/1 1024KB"}},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.fixture] = true
		t.Run(tt.fixture, func(t *testing.T) {
			st, err := ParseMdstat(readFixture(t, filepath.Join("mdstat", tt.fixture+".txt")))
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"raid0", "raid1", "raid10"}; !reflect.DeepEqual(st.Personalities, want) {
				t.Errorf("personalities %v, want %v", st.Personalities, want)
			}
			var got []string
			for _, a := range st.Arrays {
				got = append(got, mdstatSummary(a))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
	matches, _ := filepath.Glob(filepath.Join("testdata", "mdstat", "*.txt"))
	for _, m := range matches {
		if name := strings.TrimSuffix(filepath.Base(m), ".txt"); !covered[name] {
			t.Errorf("fixture %s has no expectation", name)
		}
	}
}

// Formats the kernel prints that the captured boot did not produce, written
// from md.c's md_seq_show, status_resync and md_bitmap_status.
func TestParseMdstatKernelFormats(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{
			name: "complete sync prints 100.0 without a space",
			in:   "md0 : active raid1 sdb[1] sda[0]\n      1046528 blocks super 1.2 [2/2] [UU]\n      [====================>]  resync =100.0% (1046528/1046528) finish=0.0min speed=94208K/sec\n      \n",
			want: []string{"md0 active raid1 blocks=1046528 super=1.2 [2/2] [UU] sdb[1] sda[0] sync=resync 100.0% (1046528/1046528) finish=0.0min speed=94208K"},
		},
		{
			name: "read-only, replacement, journal, bitmap file, B chunk",
			in:   "md1 : active (read-only) raid1 sdc[2](R) sdd[3](J) sdb[1](W)(F) sda[0]\n      1046528 blocks super 1.2 [2/2] [UU]\n      bitmap: 3/8 pages [12KB], 512B chunk, file: /var/md1.bitmap\n",
			want: []string{"md1 active ro raid1 blocks=1046528 super=1.2 [2/2] [UU] sdc[2](R) sdd[3](J) sdb[1](W)(F) sda[0] bitmap=3/8 0KB file=/var/md1.bitmap"},
		},
		{
			name: "0.90 metadata, raid5, reshape, broken",
			in:   "Personalities : [raid6] [raid5] [raid4] \nmd2 : broken raid5 sdc1[2] sdb1[1] sda1[0]\n      2093056 blocks level 5, 512k chunk, algorithm 2 [3/3] [UUU]\n      [>....................]  reshape =  0.1% (1024/1046528) finish=10.0min speed=1024K/sec\n      \nunused devices: sdz sdy \n",
			want: []string{"md2 broken raid5 blocks=2093056 super= [3/3] [UUU] sdc1[2] sdb1[1] sda1[0] sync=reshape 0.1% (1024/1046528) finish=10.0min speed=1024K"},
		},
		{
			name: "array with no members yet",
			in:   "md3 : inactive\n       \n",
			want: []string{"md3 inactive  blocks=0 super= [0/0] []"},
		},
		{
			name: "inactive array without members, after a failed assemble",
			in:   "md127 : inactive super 1.2\n       \nmd126 : active raid1 sdb[1] sda[0]\n      100 blocks super 1.2 [2/2] [UU]\n",
			want: []string{"md127 inactive  blocks=0 super=1.2 [0/0] []", "md126 active raid1 blocks=100 super=1.2 [2/2] [UU] sdb[1] sda[0]"},
		},
		{
			name: "inactive array without members, external and non-persistent metadata",
			in:   "md125 : inactive super external:imsm\nmd124 : inactive super non-persistent\n",
			want: []string{"md125 inactive  blocks=0 super=external:imsm [0/0] []", "md124 inactive  blocks=0 super=non-persistent [0/0] []"},
		},
		{
			name: "clustered resync on another node",
			in:   "md4 : active raid1 sdb[1] sda[0]\n      1046528 blocks super 1.2 [2/2] [UU]\n      \trecover=REMOTE\n      \n",
			want: []string{"md4 active raid1 blocks=1046528 super=1.2 [2/2] [UU] sdb[1] sda[0] sync=recover=REMOTE"},
		},
		{
			name: "progress without finish and speed",
			in:   "md5 : active raid1 sdb[1] sda[0]\n      100 blocks super 1.2 [2/1] [U_]\n      [>....................]  recovery =  0.0% (1/100)\n",
			want: []string{"md5 active raid1 blocks=100 super=1.2 [2/1] [U_] sdb[1] sda[0] sync=recovery 0.0% (1/100) finish=0.0min speed=0K"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := ParseMdstat([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range st.Arrays {
				got = append(got, mdstatSummary(a))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestParseMdstatUnusedDevices(t *testing.T) {
	st, err := ParseMdstat([]byte("Personalities : \nunused devices: sdz sdy \n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Personalities) != 0 || !reflect.DeepEqual(st.UnusedDevices, []string{"sdz", "sdy"}) {
		t.Errorf("got %+v", st)
	}
}

func TestParseMdstatErrors(t *testing.T) {
	const header = "md0 : active raid1 sdb[1] sda[0]\n"
	tests := []struct {
		name string
		in   string
	}{
		{"unknown top-level line", "read_ahead 1024 sectors\n"},
		{"personality not bracketed", "Personalities : raid1\n"},
		{"unknown state", "md0 : resting raid1 sda[0]\n"},
		{"unknown mode", "md0 : active (sleepy) raid1 sda[0]\n"},
		{"no personality", "md0 : active\n"},
		{"member without descriptor", "md0 : active raid1 sda\n"},
		{"member with unknown flag", "md0 : active raid1 sda[0](X)\n"},
		{"indented line outside array", "      1046528 blocks super 1.2 [2/2] [UU]\n"},
		{"more active than raid disks", header + "      100 blocks super 1.2 [2/3] [UU]\n"},
		{"status length differs", header + "      100 blocks super 1.2 [2/2] [UUU]\n"},
		{"garbled progress", header + "      [=>...]  recovery = lots\n"},
		{"percent over 100", header + "      [=>...]  recovery = 100.1% (1/1) finish=0.0min speed=1K/sec\n"},
		{"done over total", header + "      [=>...]  recovery =  5.0% (3/2) finish=0.0min speed=1K/sec\n"},
		{"bitmap garbled", header + "      bitmap: lots of pages\n"},
		{"bitmap pages over total", header + "      bitmap: 2/1 pages [4KB], 65536KB chunk\n"},
		{"huge disk count", header + "      100 blocks super 1.2 [99999999999/1] [U]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := ParseMdstat([]byte(tt.in))
			if err == nil && len(st.Arrays) == 1 {
				// An array's own line it cannot read: that array carries
				// the error, the file does not fail (see
				// TestParseMdstatOneUnreadableArray).
				err = st.Arrays[0].Err
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %+v, %v; want ErrMalformed", st, err)
			}
			if !strings.Contains(err.Error(), "line ") {
				t.Errorf("error %q does not name the line", err)
			}
		})
	}
}

// One array the parser cannot read must not hide the others: it is listed
// with its error (naming the line), and the rest of the file is parsed.
func TestParseMdstatOneUnreadableArray(t *testing.T) {
	const good = "md126 : active raid1 sdb[1] sda[0]\n      100 blocks super 1.2 [2/2] [UU]\n"
	for name, bad := range map[string]string{
		"garbled bitmap":   "md127 : active raid1 sdd[1] sdc[0]\n      100 blocks super 1.2 [2/2] [UU]\n      bitmap: lots of pages\n",
		"unknown state":    "md127 : resting raid1 sdc[0]\n      100 blocks super 1.2 [2/2] [UU]\n",
		"garbled member":   "md127 : active raid1 sdc\n",
		"garbled progress": "md127 : active raid1 sdd[1] sdc[0]\n      100 blocks super 1.2 [2/1] [U_]\n      [=>...]  recovery = lots\n",
	} {
		t.Run(name, func(t *testing.T) {
			st, err := ParseMdstat([]byte("Personalities : [raid1] \n" + bad + good + "unused devices: <none>\n"))
			if err != nil {
				t.Fatalf("the whole file failed: %v", err)
			}
			if len(st.Arrays) != 2 || st.Arrays[0].Name != "md127" || st.Arrays[1].Name != "md126" {
				t.Fatalf("arrays %+v", st.Arrays)
			}
			if err := st.Arrays[0].Err; !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "line ") {
				t.Errorf("md127: error %v, want ErrMalformed naming the line", err)
			}
			if a := st.Arrays[1]; a.Err != nil || mdstatSummary(a) != "md126 active raid1 blocks=100 super=1.2 [2/2] [UU] sdb[1] sda[0]" {
				t.Errorf("md126: %s, %v", mdstatSummary(a), a.Err)
			}
		})
	}
}

func TestReadMdstat(t *testing.T) {
	root := t.TempDir()
	m := NewManager(nil, root)
	if _, err := m.ReadMdstat(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("without /proc/mdstat: err = %v, want ErrNotFound", err)
	}
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "proc", "mdstat"), readFixture(t, "mdstat/raid1-recovery.txt"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := m.ReadMdstat()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Arrays) != 1 || st.Arrays[0].Sync == nil || st.Arrays[0].Sync.Action != "recovery" {
		t.Errorf("got %+v", st)
	}
}

func FuzzParseMdstat(f *testing.F) {
	matches, err := filepath.Glob(filepath.Join("testdata", "mdstat", "*.txt"))
	if err != nil || len(matches) == 0 {
		f.Fatalf("no mdstat fixtures: %v", err)
	}
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("md127 : inactive super 1.2\n       \n"))
	f.Add([]byte("md127 : inactive super\nmd126 : inactive super 1.2 sda[0]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseMdstat(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		for _, a := range st.Arrays {
			if a.Name == "" || strings.ContainsAny(a.Name, " \t\n") {
				t.Fatalf("array name %q", a.Name)
			}
			if a.Err != nil {
				if !errors.Is(a.Err, ErrMalformed) {
					t.Fatalf("%s: error %v does not wrap ErrMalformed", a.Name, a.Err)
				}
				continue // unreadable: reported and skipped by its readers
			}
			if a.Super == "super" {
				t.Fatalf("%s: metadata version %q", a.Name, a.Super)
			}
			if a.ActiveDisks > a.RaidDisks || a.ActiveDisks < 0 {
				t.Fatalf("%s: %d active of %d", a.Name, a.ActiveDisks, a.RaidDisks)
			}
			if a.Status != "" && len(a.Status) != a.RaidDisks {
				t.Fatalf("%s: status %q for %d disks", a.Name, a.Status, a.RaidDisks)
			}
			if s := a.Sync; s != nil && (s.Done > s.Total || s.Percent < 0 || s.Percent > 100) {
				t.Fatalf("%s: sync %+v", a.Name, *s)
			}
			if bm := a.Bitmap; bm != nil && (bm.PagesUsed > bm.PagesTotal || bm.PagesUsed < 0) {
				t.Fatalf("%s: bitmap %+v", a.Name, *bm)
			}
			if a.Name == "" || strings.ContainsAny(a.Name, " \t\n") {
				t.Fatalf("array name %q", a.Name)
			}
			for _, m := range a.Members {
				if m.Device == "" {
					t.Fatalf("%s: member without device", a.Name)
				}
			}
		}
	})
}
