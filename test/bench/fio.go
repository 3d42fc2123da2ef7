// Package bench holds the data-path benchmark's measurements and report:
// fio's JSON output parsed, the figures of each setup (one NVMe/TCP
// namespace, nvmirror volumes, DRBD) turned into ratios to the
// single-namespace floor of the same run, and those rendered as the table of
// docs/performance.md and an SVG chart. The measuring itself runs in the VM
// (test/kernel's TestBenchDatapath); `make bench-datapath` drives it.
package bench

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Fio is one fio job's result, in the units the report uses.
type Fio struct {
	// ReadIOPS and WriteIOPS are I/Os per second.
	ReadIOPS, WriteIOPS float64
	// ReadBytesPerSec and WriteBytesPerSec are bandwidths.
	ReadBytesPerSec, WriteBytesPerSec float64
	// WriteP50, WriteP99, ReadP50 and ReadP99 are latency percentiles in
	// seconds: fio's total latency (lat, from submission to completion)
	// when the job asked for it (--lat_percentiles=1, as Args does), else
	// its completion latency (clat). clat alone misleads here: NVMe/TCP on
	// loopback often completes an I/O inside io_submit, leaving clat a few
	// microseconds and the whole cost in the submission latency.
	WriteP50, WriteP99, ReadP50, ReadP99 float64
}

type fioDir struct {
	IOPS    float64 `json:"iops"`
	BWBytes float64 `json:"bw_bytes"`
	ClatNS  fioLat  `json:"clat_ns"`
	LatNS   fioLat  `json:"lat_ns"`
}

type fioLat struct {
	Percentile map[string]float64 `json:"percentile"`
}

func (d fioDir) percentile(p string) float64 {
	if v, ok := d.LatNS.Percentile[p]; ok {
		return v / 1e9
	}
	return d.ClatNS.Percentile[p] / 1e9
}

type fioJob struct {
	Jobname string `json:"jobname"`
	Error   int    `json:"error"`
	Read    fioDir `json:"read"`
	Write   fioDir `json:"write"`
}

// ParseFio reads the output of `fio --output-format=json` for one job (or
// several reported as one group: --group_reporting).
func ParseFio(out []byte) (Fio, error) {
	var doc struct {
		Jobs []fioJob `json:"jobs"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return Fio{}, fmt.Errorf("fio output: %w", err)
	}
	if len(doc.Jobs) == 0 {
		return Fio{}, errors.New("fio output has no job")
	}
	var f Fio
	for _, j := range doc.Jobs {
		if j.Error != 0 {
			return Fio{}, fmt.Errorf("fio job %q: error %d", j.Jobname, j.Error)
		}
		f.ReadIOPS += j.Read.IOPS
		f.WriteIOPS += j.Write.IOPS
		f.ReadBytesPerSec += j.Read.BWBytes
		f.WriteBytesPerSec += j.Write.BWBytes
	}
	// Percentiles are per job; with one job (the benchmark's case) they are
	// the job's own.
	j := doc.Jobs[0]
	f.WriteP50 = j.Write.percentile("50.000000")
	f.WriteP99 = j.Write.percentile("99.000000")
	f.ReadP50 = j.Read.percentile("50.000000")
	f.ReadP99 = j.Read.percentile("99.000000")
	if f.ReadIOPS == 0 && f.WriteIOPS == 0 {
		return f, fmt.Errorf("fio job %q did no I/O", j.Jobname)
	}
	return f, nil
}

// Job is one fio job of the benchmark and the figures it yields.
type Job struct {
	Name    string
	RW      string // fio's rw: randwrite, randread, write, read
	BS      string
	IODepth int
	// Figures maps the job's result to the report's figures.
	Figures func(Fio) map[string]float64
}

// Jobs are the benchmark's fio jobs, in the order they run.
var Jobs = []Job{
	{"randwrite-qd1", "randwrite", "4k", 1, func(f Fio) map[string]float64 {
		return map[string]float64{RandWriteQD1: f.WriteIOPS, WriteP50: f.WriteP50, WriteP99: f.WriteP99}
	}},
	{"randwrite-qd32", "randwrite", "4k", 32, func(f Fio) map[string]float64 { return map[string]float64{RandWriteQD32: f.WriteIOPS} }},
	{"randread-qd1", "randread", "4k", 1, func(f Fio) map[string]float64 { return map[string]float64{RandReadQD1: f.ReadIOPS} }},
	{"randread-qd32", "randread", "4k", 32, func(f Fio) map[string]float64 { return map[string]float64{RandReadQD32: f.ReadIOPS} }},
	{"seqwrite", "write", "1M", 8, func(f Fio) map[string]float64 { return map[string]float64{SeqWrite: f.WriteBytesPerSec} }},
	{"seqread", "read", "1M", 8, func(f Fio) map[string]float64 { return map[string]float64{SeqRead: f.ReadBytesPerSec} }},
}

// Args are fio's arguments to run j on dev over its first size bytes for
// runtime seconds (after a ramp of rampSeconds), with JSON output: direct
// I/O through libaio, one job, no random map (a random job may hit a block
// twice, as applications do).
func (j Job) Args(dev string, size int64, rampSeconds, runtime int) []string {
	return []string{
		"--name=" + j.Name, "--filename=" + dev, "--rw=" + j.RW, "--bs=" + j.BS,
		fmt.Sprintf("--iodepth=%d", j.IODepth), fmt.Sprintf("--size=%d", size),
		"--ioengine=libaio", "--direct=1", "--numjobs=1", "--norandommap", "--randrepeat=0",
		"--time_based", fmt.Sprintf("--runtime=%d", runtime), fmt.Sprintf("--ramp_time=%d", rampSeconds),
		"--lat_percentiles=1", "--output-format=json",
	}
}
