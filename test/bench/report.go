package bench

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
)

// The measured figures, by key. Throughput and latency figures are measured
// for every setup; the recovery figures only for the mirrored ones.
const (
	RandWriteQD1  = "randwrite_qd1_iops"
	RandWriteQD32 = "randwrite_qd32_iops"
	RandReadQD1   = "randread_qd1_iops"
	RandReadQD32  = "randread_qd32_iops"
	SeqWrite      = "seqwrite_bytes_per_sec"
	SeqRead       = "seqread_bytes_per_sec"
	WriteP50      = "write_p50_seconds"
	WriteP99      = "write_p99_seconds"
	ResyncBytes   = "resync_bytes"
	ResyncSeconds = "resync_seconds"
	StallSeconds  = "stall_seconds"
)

// The setups, by key; Floor is what every ratio is relative to.
const (
	Floor     = "nvme"
	Nvmirror2 = "nvmirror2"
	Nvmirror3 = "nvmirror3"
	DRBD2     = "drbd2"
)

// ResultMarker starts the guest's output line that carries a Report as
// JSON; the host picks that line out of the VM's output.
const ResultMarker = "@@BENCH-RESULT "

// Setup is one data path's figures.
type Setup struct {
	Key    string             `json:"key"`
	Label  string             `json:"label"`
	Values map[string]float64 `json:"values"`
}

// Report is one run of the benchmark.
type Report struct {
	// Mode is "full" (make bench-datapath) or "smoke" (make test).
	Mode string `json:"mode"`
	// Kernel is the guest's kernel release.
	Kernel string `json:"kernel"`
	// VolumeBytes is the size every setup's device is tested over.
	VolumeBytes int64 `json:"volumeBytes"`
	// JobSeconds is each fio job's measured runtime.
	JobSeconds int `json:"jobSeconds"`
	// OutageSeconds and OutageBytes: how long one replica was away and how
	// much was written meanwhile, for the recovery figures.
	OutageSeconds float64 `json:"outageSeconds"`
	OutageBytes   int64   `json:"outageBytes"`
	// Settings says how each setup was configured, one line each.
	Settings []string `json:"settings"`
	Setups   []Setup  `json:"setups"`
}

// Setup returns the setup with key, or false.
func (r Report) Setup(key string) (Setup, bool) {
	for _, s := range r.Setups {
		if s.Key == key {
			return s, true
		}
	}
	return Setup{}, false
}

type ratioKind int

const (
	// higherBetter: ratio = value / floor's value.
	higherBetter ratioKind = iota
	// lowerBetter: ratio = value / floor's value, and less is better.
	lowerBetter
	// perWritten: ratio = value / the bytes written during the outage.
	perWritten
	// perFloorWrite: ratio = value / the time the floor takes to write the
	// outage's bytes sequentially.
	perFloorWrite
	// absolute: no ratio (the floor has nothing to compare with).
	absolute
)

type row struct {
	key, label, unit string
	kind             ratioKind
}

var rows = []row{
	{RandWriteQD1, "4k random write, QD1", "IOPS", higherBetter},
	{RandWriteQD32, "4k random write, QD32", "IOPS", higherBetter},
	{RandReadQD1, "4k random read, QD1", "IOPS", higherBetter},
	{RandReadQD32, "4k random read, QD32", "IOPS", higherBetter},
	{SeqWrite, "1 MiB sequential write, QD8", "MiB/s", higherBetter},
	{SeqRead, "1 MiB sequential read, QD8", "MiB/s", higherBetter},
	{WriteP50, "4k write latency p50, QD1", "µs", lowerBetter},
	{WriteP99, "4k write latency p99, QD1", "µs", lowerBetter},
	{ResyncBytes, "resynced after the outage", "MiB", perWritten},
	{ResyncSeconds, "resync time", "s", perFloorWrite},
	{StallSeconds, "write stall at a replica's loss", "s", absolute},
}

func (rw row) format(v float64) string {
	switch rw.unit {
	case "MiB/s", "MiB":
		v /= 1 << 20
	case "µs":
		v *= 1e6
	}
	switch {
	case v > 0 && v < 0.1:
		return fmt.Sprintf("%.3f", v)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// ratio is a setup's figure relative to its base, or false when there is
// none (no figure, no base, or an absolute row).
func (r Report) ratio(rw row, s Setup) (float64, bool) {
	v, ok := s.Values[rw.key]
	if !ok {
		return 0, false
	}
	var base float64
	switch rw.kind {
	case higherBetter, lowerBetter:
		f, ok := r.Setup(Floor)
		if !ok {
			return 0, false
		}
		base = f.Values[rw.key]
	case perWritten:
		base = float64(r.OutageBytes)
	case perFloorWrite:
		f, ok := r.Setup(Floor)
		if !ok || f.Values[SeqWrite] == 0 {
			return 0, false
		}
		base = float64(r.OutageBytes) / f.Values[SeqWrite]
	default:
		return 0, false
	}
	if base == 0 || math.IsNaN(base) {
		return 0, false
	}
	return v / base, true
}

// Validate checks that a report has the floor and, for every setup, every
// figure its kind of setup must have, each finite and positive.
func (r Report) Validate() error {
	if _, ok := r.Setup(Floor); !ok {
		return errors.New("report has no single-namespace floor")
	}
	var problems []string
	for _, s := range r.Setups {
		for _, rw := range rows {
			if s.Key == Floor && (rw.kind == perWritten || rw.kind == perFloorWrite || rw.kind == absolute) {
				continue
			}
			v, ok := s.Values[rw.key]
			if !ok {
				continue // a smoke run measures only some figures
			}
			if !(v > 0) || math.IsInf(v, 0) {
				problems = append(problems, fmt.Sprintf("%s %s = %v", s.Key, rw.key, v))
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("implausible figures: %s", strings.Join(problems, "; "))
	}
	return nil
}

// Table renders the report as a Markdown table: a row per figure, a column
// per setup, each cell the ratio to its base and the absolute figure.
func (r Report) Table() string {
	var b strings.Builder
	b.WriteString("| figure | unit |")
	for _, s := range r.Setups {
		b.WriteString(" " + s.Label + " |")
	}
	b.WriteString("\n|---|---|")
	for range r.Setups {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, rw := range rows {
		any := false
		for _, s := range r.Setups {
			if _, ok := s.Values[rw.key]; ok {
				any = true
			}
		}
		if !any {
			continue
		}
		label := rw.label
		switch rw.kind {
		case perWritten:
			label += fmt.Sprintf(" (ratio: to the %s written)", rowBytes(r.OutageBytes))
		case perFloorWrite:
			label += " (ratio: to the floor's time to write as much)"
		}
		fmt.Fprintf(&b, "| %s | %s |", label, rw.unit)
		for _, s := range r.Setups {
			v, ok := s.Values[rw.key]
			switch {
			case !ok:
				b.WriteString(" — |")
			case s.Key == Floor && (rw.kind == higherBetter || rw.kind == lowerBetter):
				fmt.Fprintf(&b, " 1 (%s) |", rw.format(v))
			default:
				if q, ok := r.ratio(rw, s); ok {
					fmt.Fprintf(&b, " **%.2f×** (%s) |", q, rw.format(v))
				} else {
					fmt.Fprintf(&b, " %s |", rw.format(v))
				}
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func rowBytes(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }

// The markers between which RewriteDoc puts the table.
const (
	BeginMarker = "<!-- bench-datapath:begin (generated by make bench-datapath; do not edit) -->"
	EndMarker   = "<!-- bench-datapath:end -->"
)

// RewriteDoc replaces what lies between BeginMarker and EndMarker in doc
// with generated, and fails when the markers are missing or out of order.
func RewriteDoc(doc []byte, generated string) ([]byte, error) {
	return RewriteSection(doc, BeginMarker, EndMarker, generated)
}

// RewriteSection replaces what lies between begin and end in doc with
// generated, and fails when the markers are missing or out of order.
func RewriteSection(doc []byte, begin, end, generated string) ([]byte, error) {
	i := bytes.Index(doc, []byte(begin))
	j := bytes.Index(doc, []byte(end))
	if i < 0 || j < 0 || j < i {
		return nil, fmt.Errorf("the document lacks the markers %q ... %q", begin, end)
	}
	var out bytes.Buffer
	out.Write(doc[:i+len(begin)])
	out.WriteString("\n")
	out.WriteString(strings.TrimSpace(generated))
	out.WriteString("\n")
	out.Write(doc[j:])
	return out.Bytes(), nil
}

// Generated is what RewriteDoc puts in the doc: the run's parameters, the
// settings, the table and the chart's link.
func (r Report) Generated(chart string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run: kernel %s under qemu TCG (2 vCPU), %s per device, %d s per fio job; outage %.0f s with %s written during it.\n\n",
		r.Kernel, rowBytes(r.VolumeBytes), r.JobSeconds, r.OutageSeconds, rowBytes(r.OutageBytes))
	for _, s := range r.Settings {
		b.WriteString("- " + s + "\n")
	}
	b.WriteString("\n")
	b.WriteString(r.Table())
	if chart != "" {
		fmt.Fprintf(&b, "\n![ratios to the single-namespace floor](%s)\n", chart)
	}
	return b.String()
}
