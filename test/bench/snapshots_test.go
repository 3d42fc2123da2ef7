package bench

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func snapshotSample() SnapshotReport {
	cell := func(pool, label string, size int64, reflinked bool, snap, restore, stage []float64) SnapshotCell {
		alloc := int64(192 << 20)
		used := int64(0)
		if !reflinked {
			used = 192 << 20
		}
		return SnapshotCell{Pool: pool, PoolLabel: label, VolumeBytes: size, Copies: 3, Reflinked: reflinked,
			SnapshotSeconds: snap, RestoreSeconds: restore, StageSeconds: stage,
			CopyAllocatedBytes: []int64{alloc, alloc, alloc}, SnapshotPoolBytes: []int64{used, used + 1<<20, used},
			RestorePoolBytes: []int64{used, used, used}, Verified: 3, MDChecks: 1}
	}
	return SnapshotReport{
		Mode: "full", Kernel: "6.1.0-57-amd64", Repetitions: 3, WrittenBytes: 64 << 20, Chunks: 64, Seconds: 900,
		Settings: []string{"3 storage nodes"},
		Cells: []SnapshotCell{
			cell("xfs", "XFS, reflink=1", 1<<30, true, []float64{0.5, 0.4, 0.6}, []float64{1, 1.2, 0.9}, []float64{3, 3.5, 4}),
			cell("xfs", "XFS, reflink=1", 16<<30, true, []float64{0.5, 0.6, 0.7}, []float64{1.1, 1.2, 1.2}, []float64{3, 3.5, 4}),
			cell("ext4", "ext4", 1<<30, false, []float64{1, 2, 1.5}, []float64{2, 2, 2}, []float64{3, 3, 3}),
			cell("ext4", "ext4", 16<<30, false, []float64{3, 3, 3}, []float64{1, 1, 1}, []float64{6, 6, 6}),
		},
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{7}, 7}} {
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median of nothing is not NaN")
	}
	in := []float64{3, 1, 2}
	Median(in)
	if in[0] != 3 {
		t.Error("Median sorted its argument")
	}
}

func TestSnapshotTable(t *testing.T) {
	r := snapshotSample()
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	tab := r.Table()
	for _, want := range []string{
		"| XFS, reflink=1 | 1 GiB | **0.50 s** (0.40–0.60) | **1.00 s** (0.90–1.20) | **3.50 s** (3.00–4.00) | 192 MiB (3 reflinks) | 0.0 MiB / 0.0 MiB |",
		"| ext4 | 16 GiB | **3.00 s** (3.00–3.00) | **1.00 s** (1.00–1.00) | **6.00 s** (6.00–6.00) | 192 MiB (3 sparse copies) | 192 MiB / 192 MiB |",
		"| XFS, reflink=1 | 16 GiB / 1 GiB (16× the size, the same data) | **1.20×** | **1.20×** | **1.00×** |",
		"| ext4 | 16 GiB / 1 GiB (16× the size, the same data) | **2.00×** | **0.50×** | **2.00×** |",
	} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	gen := r.Generated()
	for _, want := range []string{"kernel 6.1.0-57-amd64", "64 MiB written to each volume (64 chunks", "3 repetitions", "15 minutes", "- 3 storage nodes",
		"12 restored volumes each read back", "md check of 4 restored arrays (the first restore of each row): 0 mismatches"} {
		if !strings.Contains(gen, want) {
			t.Errorf("generated section lacks %q:\n%s", want, gen)
		}
	}
	// What the guest prints is what the host reads.
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back SnapshotReport
	if err := json.Unmarshal(b, &back); err != nil || back.Table() != tab {
		t.Errorf("the report does not survive JSON: %v", err)
	}
	out, err := RewriteSection([]byte("# x\n"+SnapshotBeginMarker+"\nold\n"+SnapshotEndMarker+"\n"+BeginMarker+"\nkept\n"+EndMarker+"\n"), SnapshotBeginMarker, SnapshotEndMarker, gen)
	if err != nil || !strings.Contains(string(out), "\nkept\n") || strings.Contains(string(out), "\nold\n") || !strings.Contains(string(out), "| ext4 | 16 GiB |") {
		t.Errorf("RewriteSection: %v\n%s", err, out)
	}
}

func TestSnapshotSingleRun(t *testing.T) {
	r := snapshotSample()
	r.Repetitions = 1
	for i := range r.Cells {
		c := &r.Cells[i]
		c.SnapshotSeconds, c.RestoreSeconds, c.StageSeconds = c.SnapshotSeconds[:1], c.RestoreSeconds[:1], c.StageSeconds[:1]
		c.CopyAllocatedBytes, c.SnapshotPoolBytes, c.RestorePoolBytes = c.CopyAllocatedBytes[:1], c.SnapshotPoolBytes[:1], c.RestorePoolBytes[:1]
		c.Verified = 1
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if tab := r.Table(); !strings.Contains(tab, "| XFS, reflink=1 | 1 GiB | 0.50 s | 1.00 s | 3.00 s |") {
		t.Errorf("a single run's cells are not plain figures:\n%s", tab)
	}
}

func TestSnapshotValidate(t *testing.T) {
	for name, spoil := range map[string]func(r *SnapshotReport){
		"a zero time":              func(r *SnapshotReport) { r.Cells[0].RestoreSeconds[1] = 0 },
		"a missing repetition":     func(r *SnapshotReport) { r.Cells[1].StageSeconds = r.Cells[1].StageSeconds[:2] },
		"a missing space figure":   func(r *SnapshotReport) { r.Cells[2].SnapshotPoolBytes = nil },
		"a restore not verified":   func(r *SnapshotReport) { r.Cells[3].Verified = 2 },
		"no md check":              func(r *SnapshotReport) { r.Cells[0].MDChecks = 0 },
		"a pool with one size":     func(r *SnapshotReport) { r.Cells = r.Cells[1:] },
		"no cells":                 func(r *SnapshotReport) { r.Cells = nil },
		"an infinite time":         func(r *SnapshotReport) { r.Cells[0].SnapshotSeconds[0] = math.Inf(1) },
		"no repetitions announced": func(r *SnapshotReport) { r.Repetitions = 0 },
	} {
		r := snapshotSample()
		spoil(&r)
		if err := r.Validate(); err == nil {
			t.Errorf("%s passed", name)
		}
	}
}
