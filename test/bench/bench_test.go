package bench

import (
	"encoding/xml"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

func TestParseFio(t *testing.T) {
	out, err := os.ReadFile("testdata/randwrite.json")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseFio(out)
	if err != nil {
		t.Fatal(err)
	}
	if f.WriteIOPS < 93166 || f.WriteIOPS > 93167 || f.ReadIOPS != 0 {
		t.Errorf("iops: write %v read %v", f.WriteIOPS, f.ReadIOPS)
	}
	if f.WriteBytesPerSec != 381611348 {
		t.Errorf("write bw %v", f.WriteBytesPerSec)
	}
	if !(f.WriteP50 > 0 && f.WriteP99 >= f.WriteP50 && f.WriteP99 < 1) {
		t.Errorf("latency p50 %v p99 %v", f.WriteP50, f.WriteP99)
	}
	// With --lat_percentiles=1 the total latency's percentiles are used,
	// not the completion latency's.
	out, err = os.ReadFile("testdata/randwrite-lat.json")
	if err != nil {
		t.Fatal(err)
	}
	if f, err = ParseFio(out); err != nil {
		t.Fatal(err)
	}
	if f.WriteP50 != 4512e-9 {
		t.Errorf("write p50 %v, want fio's lat p50 4512 ns (not clat's 1608)", f.WriteP50)
	}
	for _, bad := range []string{``, `{}`, `{"jobs":[]}`, `{"jobs":[{"jobname":"x","error":5}]}`, `{"jobs":[{"jobname":"x"}]}`} {
		if _, err := ParseFio([]byte(bad)); err == nil {
			t.Errorf("ParseFio(%q) succeeded", bad)
		}
	}
}

func TestJobArgs(t *testing.T) {
	a := strings.Join(Jobs[1].Args("/dev/md0", 256<<20, 2, 10), " ")
	for _, want := range []string{"--filename=/dev/md0", "--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=268435456", "--direct=1", "--runtime=10", "--ramp_time=2", "--lat_percentiles=1", "--output-format=json"} {
		if !strings.Contains(a, want) {
			t.Errorf("args %q lack %q", a, want)
		}
	}
}

func sample() Report {
	return Report{
		Mode: "full", Kernel: "6.1.0-57-amd64", VolumeBytes: 256 << 20, JobSeconds: 10,
		OutageSeconds: 10, OutageBytes: 64 << 20,
		Settings: []string{"md: bitmap chunk 4 MiB"},
		Setups: []Setup{
			{Key: Floor, Label: "1 NVMe/TCP namespace", Values: map[string]float64{RandWriteQD1: 1000, SeqWrite: 64 << 20, WriteP50: 0.001, WriteP99: 0.002}},
			{Key: Nvmirror2, Label: "nvmirror 2 replicas", Values: map[string]float64{RandWriteQD1: 500, SeqWrite: 32 << 20, WriteP50: 0.002, WriteP99: 0.005,
				ResyncBytes: 68 << 20, ResyncSeconds: 2, StallSeconds: 1.7}},
			{Key: DRBD2, Label: "DRBD 2 nodes", Values: map[string]float64{RandWriteQD1: 800, SeqWrite: 48 << 20, WriteP50: 0.0015, WriteP99: 0.003,
				ResyncBytes: 64 << 20, ResyncSeconds: 3, StallSeconds: 0.01}},
		},
	}
}

func TestTable(t *testing.T) {
	r := sample()
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	tab := r.Table()
	for _, want := range []string{
		"| figure | unit | 1 NVMe/TCP namespace | nvmirror 2 replicas | DRBD 2 nodes |",
		"| 4k random write, QD1 | IOPS | 1 (1000) | **0.50×** (500) | **0.80×** (800) |",
		"| 4k write latency p99, QD1 | µs | 1 (2000) | **2.50×** (5000) | **1.50×** (3000) |",
		"| resynced after the outage (ratio: to the 64 MiB written) | MiB | — | **1.06×** (68.0) | **1.00×** (64.0) |",
		// The floor writes 64 MiB in 1 s: resync times are ratios to that.
		"| resync time (ratio: to the floor's time to write as much) | s | — | **2.00×** (2.00) | **3.00×** (3.00) |",
		"| write stall at a replica's loss | s | — | 1.70 | 0.010 |",
	} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	if strings.Contains(tab, "random read") {
		t.Errorf("table has rows no setup measured:\n%s", tab)
	}
}

func TestValidate(t *testing.T) {
	r := sample()
	r.Setups[1].Values[RandWriteQD1] = 0
	if err := r.Validate(); err == nil {
		t.Error("a zero IOPS figure passed")
	}
	r = sample()
	r.Setups = r.Setups[1:]
	if err := r.Validate(); err == nil {
		t.Error("a report without the floor passed")
	}
}

func TestSVGIsWellFormed(t *testing.T) {
	svg := sample().SVG()
	dec := xml.NewDecoder(strings.NewReader(string(svg)))
	rects := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	// Background, 2 legend swatches, and 2 bars in each of the 6 groups
	// with a ratio (4 measured figures, resync bytes and time).
	if want := 1 + 2 + 2*6; rects != want {
		t.Errorf("%d rects, want %d\n%s", rects, want, svg)
	}
}

func TestRewriteDoc(t *testing.T) {
	doc := "# Perf\n\nintro\n\n" + BeginMarker + "\nold table\n" + EndMarker + "\n\nafter\n"
	out, err := RewriteDoc([]byte(doc), "new table\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "# Perf\n\nintro\n\n" + BeginMarker + "\nnew table\n" + EndMarker + "\n\nafter\n"
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	again, _ := RewriteDoc(out, "new table\n")
	if string(again) != want {
		t.Errorf("rewriting is not idempotent:\n%s", again)
	}
	if _, err := RewriteDoc([]byte("no markers"), "x"); err == nil {
		t.Error("a doc without markers was rewritten")
	}
}
