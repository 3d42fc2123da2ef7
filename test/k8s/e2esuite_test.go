package k8s

import (
	"bufio"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/test/vm"
	"go.yaml.in/yaml/v3"
)

var updateE2ESpecs = flag.Bool("update-e2e-specs", false, "rewrite testdata/e2e-specs.txt from e2e.test's dry run (TestE2ESpecList)")

// e2eSpecsFile lists the external suite's specs for e2e-driver.yaml, as
// e2e.test's dry run names them.
const e2eSpecsFile = "testdata/e2e-specs.txt"

func readE2ESpecs(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(e2eSpecsFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			names = append(names, l)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// chooseE2ESpecs applies focus and skip as Ginkgo does: each regular
// expression is matched against the suite's description, a space and the
// spec's full text.
func chooseE2ESpecs(t *testing.T, names []string, focus, skip string) []string {
	t.Helper()
	fre, err := regexp.Compile(focus)
	if err != nil {
		t.Fatalf("focus: %v", err)
	}
	sre, err := regexp.Compile(skip)
	if err != nil {
		t.Fatalf("skip: %v", err)
	}
	var chosen []string
	for _, n := range names {
		text := "Kubernetes e2e suite " + n
		if fre.MatchString(text) && !sre.MatchString(text) {
			chosen = append(chosen, n)
		}
	}
	return chosen
}

// TestE2EFocusSkip pins what the exported focus and skip expressions choose
// among the specs that e2e-driver.yaml defines: a typo in one would
// otherwise choose nothing, or everything, only at the end of a long run.
func TestE2EFocusSkip(t *testing.T) {
	names := readE2ESpecs(t)
	if len(names) != 328 {
		t.Fatalf("%s: %d specs, want 328", e2eSpecsFile, len(names))
	}
	full := chooseE2ESpecs(t, names, E2EFullFocus, E2EFullSkip)
	if len(full) != 162 {
		t.Errorf("E2EFullFocus/E2EFullSkip choose %d specs, want 162", len(full))
	}
	for _, n := range full {
		for _, out := range []string{"[Disruptive]", "(ntfs)", "(ext3)", "[Testpattern: Inline-volume", "[Testpattern: Pre-provisioned PV", "[Testpattern: CSI Ephemeral-volume", "snapshotmetadata", "should support volume limits", "VolumeGroupSnapshottable should create snapshots for StatefulSet volumes"} {
			if strings.Contains(n, out) {
				t.Errorf("the full set has %q", n)
			}
		}
	}

	focused := chooseE2ESpecs(t, names, E2EFocusedFocus, E2EFocusedSkip)
	counts := map[string]int{}
	for _, n := range focused {
		if !slices.Contains(full, n) {
			t.Errorf("focused but not in the full set: %q", n)
		}
		pattern, suite := ParseE2ESpecName(n)
		counts[suite]++
		if !strings.HasPrefix(pattern, "Dynamic PV (") {
			t.Errorf("focused spec of pattern %q: %q", pattern, n)
		}
	}
	want := map[string]int{"provisioning": 1, "volumeMode": 1, "volumeIO": 1, "volume-expand": 1, "multiVolume": 1}
	for suite, n := range want {
		if counts[suite] != n {
			t.Errorf("focused: %d %s specs, want %d", counts[suite], suite, n)
		}
	}
	if len(focused) != 5 {
		t.Errorf("E2EFocusedFocus/E2EFocusedSkip choose %d specs, want 5:\n%s", len(focused), strings.Join(focused, "\n"))
	}
	// The anchors keep out the longer names that start the same.
	for _, n := range focused {
		if strings.Contains(n, "ROX mode") || strings.Contains(n, "in parallel") {
			t.Errorf("focused: %q", n)
		}
	}
}

// TestE2EFocusedShards: the shards choose the focused set between them,
// each spec once, and none is [Serial] (they run at once).
func TestE2EFocusedShards(t *testing.T) {
	names := readE2ESpecs(t)
	focused := chooseE2ESpecs(t, names, E2EFocusedFocus, E2EFocusedSkip)
	seen := map[string]int{}
	for i, shard := range E2EFocusedShards {
		chosen := chooseE2ESpecs(t, names, shard, E2EFocusedSkip)
		if len(chosen) == 0 {
			t.Errorf("shard %d chooses no spec", i+1)
		}
		for _, n := range chosen {
			seen[n]++
			if strings.Contains(n, "[Serial]") {
				t.Errorf("shard %d runs a [Serial] spec beside the other shard: %q", i+1, n)
			}
		}
	}
	for _, n := range focused {
		if seen[n] != 1 {
			t.Errorf("%q is in %d shards, want 1", n, seen[n])
		}
	}
	if len(seen) != len(focused) {
		t.Errorf("the shards choose %d specs, the focused set %d", len(seen), len(focused))
	}
}

// TestE2EFullFocusSuites: naming suites chooses exactly the full set's
// specs of those suites.
func TestE2EFullFocusSuites(t *testing.T) {
	names := readE2ESpecs(t)
	full := chooseE2ESpecs(t, names, E2EFullFocus, E2EFullSkip)
	for _, suites := range []string{"subPath", "multiVolume|volumeMode", "volumegroupsnapshotclass"} {
		want := map[string]bool{}
		for _, s := range strings.Split(suites, "|") {
			want[s] = true
		}
		var expect []string
		for _, n := range full {
			if _, suite := ParseE2ESpecName(n); want[suite] {
				expect = append(expect, n)
			}
		}
		got := chooseE2ESpecs(t, names, E2EFullFocusSuites(suites), E2EFullSkip)
		if len(expect) == 0 || !slices.Equal(got, expect) {
			t.Errorf("E2EFullFocusSuites(%q) chooses %d specs, want the full set's %d of those suites:\n%s", suites, len(got), len(expect), strings.Join(got, "\n"))
		}
	}
}

// TestE2EDriverDefinition checks what the suite would only find out in a
// cluster: the driver definition names nvmirror, the files it names exist,
// and its StorageClass and VolumeAttributesClass are nvmirror's with
// parameters that nvmirror's own parser takes (the VolumeAttributesClass's
// mutable ones), as test/deploy checks deploy/'s.
func TestE2EDriverDefinition(t *testing.T) {
	repo, err := vm.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	read := func(rel string) map[string]any {
		t.Helper()
		return readYAML(t, filepath.Join(repo, rel))
	}
	def := read(E2EDriverFile)
	info, _ := def["DriverInfo"].(map[string]any)
	if info["Name"] != driver.DriverName {
		t.Errorf("DriverInfo.Name %v, want %s", info["Name"], driver.DriverName)
	}
	caps, _ := info["Capabilities"].(map[string]any)
	for _, c := range []string{"RWX", "capReadOnlyMany", "topology", "volumeMountGroup"} {
		if caps[c] != false {
			t.Errorf("capability %s: %v; nvmirror has no such thing", c, caps[c])
		}
	}
	files := map[string]string{}
	for _, k := range []string{"StorageClass", "SnapshotClass", "GroupSnapshotClass", "VolumeAttributesClass"} {
		m, _ := def[k].(map[string]any)
		f, _ := m["FromFile"].(string)
		if f == "" {
			t.Errorf("%s.FromFile is not set", k)
			continue
		}
		files[k] = f
	}
	params := func(m map[string]any) map[string]string {
		ps := map[string]string{}
		raw, _ := m["parameters"].(map[string]any)
		for k, v := range raw {
			s, ok := v.(string)
			if !ok {
				t.Errorf("parameter %s is a %T; parameters are strings", k, v)
			}
			ps[k] = s
		}
		return ps
	}
	for k, f := range files {
		m := read(f)
		if m["kind"] != k && !(k == "GroupSnapshotClass" && m["kind"] == "VolumeGroupSnapshotClass") && !(k == "SnapshotClass" && m["kind"] == "VolumeSnapshotClass") {
			t.Errorf("%s: kind %v for %s", f, m["kind"], k)
		}
		name := m["driver"]
		switch k {
		case "StorageClass":
			name = m["provisioner"]
		case "VolumeAttributesClass":
			name = m["driverName"]
		}
		if name != driver.DriverName {
			t.Errorf("%s: driver %v, want %s", f, name, driver.DriverName)
		}
		ps := params(m)
		if _, err := storageclass.Parse(ps); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		if k == "VolumeAttributesClass" {
			for p := range ps {
				if !storageclass.IsMutable(p) {
					t.Errorf("%s: %s is not mutable", f, p)
				}
			}
		}
		if k == "StorageClass" && m["allowVolumeExpansion"] != true {
			t.Errorf("%s: allowVolumeExpansion %v; the expansion specs need it", f, m["allowVolumeExpansion"])
		}
	}
}

func TestParseE2ESpecName(t *testing.T) {
	for _, c := range []struct{ name, pattern, suite string }{
		{"External Storage [Driver: csi.nvmirror.io] [Testpattern: Dynamic PV (default fs)] provisioning should provision storage with pvc data source", "Dynamic PV (default fs)", "provisioning"},
		{"External Storage [Driver: csi.nvmirror.io] [Testpattern: Dynamic PV (xfs)] [Slow] multiVolume [Slow] should access to two volumes", "Dynamic PV (xfs)", "multiVolume"},
		{"External Storage [Driver: csi.nvmirror.io] [Testpattern: Dynamic PV (block volmode)(allowExpansion)] volume-expand Verify if offline PVC expansion works", "Dynamic PV (block volmode)(allowExpansion)", "volume-expand"},
		{"External Storage [Driver: csi.nvmirror.io] [Testpattern:  (delete policy)] volumegroupsnapshotclass [Feature:volumegroupsnapshot] VolumeGroupSnapshotClass should use default", "(delete policy)", "volumegroupsnapshotclass"},
		{"External Storage [Driver: csi.nvmirror.io] [Testpattern: Dynamic PV (ntfs)] [Feature:Windows] volumeIO should write files", "Dynamic PV (ntfs)", "volumeIO"},
		{"[sig-storage] CSI Mock volume expansion should expand volume", "", ""},
	} {
		p, s := ParseE2ESpecName(c.name)
		if p != c.pattern || s != c.suite {
			t.Errorf("ParseE2ESpecName(%q) = %q, %q; want %q, %q", c.name, p, s, c.pattern, c.suite)
		}
	}
	// Every spec of the list has a pattern and a suite.
	for _, n := range readE2ESpecs(t) {
		if p, s := ParseE2ESpecName(n); p == "" || s == "" || strings.HasPrefix(s, "[") {
			t.Errorf("ParseE2ESpecName(%q) = %q, %q", n, p, s)
		}
	}
}

// TestParseE2EJUnit reads testdata/e2e-junit.xml: a report e2e.test wrote
// (-report-dir) for the external suite focused on nvmirror, cut down to a
// dozen test cases of every kind. It ran against a control plane without
// kubelet whose admission refused every storage object, so the specs that
// the suite did not skip failed at their first create (or, the
// snapshotmetadata one, panicked); one passed (the CSINode check); two
// specs of other suites were not chosen by the focus.
func TestParseE2EJUnit(t *testing.T) {
	rep, err := ParseE2EJUnitFile("testdata/e2e-junit.xml")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passed != 1 || rep.Failed != 3 || rep.Skipped != 3 || rep.NotChosen != 2 {
		t.Errorf("passed %d, failed %d, skipped %d, not chosen %d; want 1, 3, 3, 2", rep.Passed, rep.Failed, rep.Skipped, rep.NotChosen)
	}
	if len(rep.Specs) != 7 {
		t.Errorf("%d specs, want 7", len(rep.Specs))
	}
	want := []E2ESuiteCount{
		{Suite: "multiVolume", Skipped: 1},
		{Suite: "provisioning", Failed: 1},
		{Suite: "snapshotmetadata", Failed: 1},
		{Suite: "volume-expand", Failed: 1},
		{Suite: "volumeIO", Skipped: 1},
		{Suite: "volumeLimits", Passed: 1},
		{Suite: "volumes", Skipped: 1},
	}
	if !slices.Equal(rep.Suites, want) {
		t.Errorf("suites:\n got %+v\nwant %+v", rep.Suites, want)
	}
	if len(rep.Failures) != 3 {
		t.Fatalf("%d failures, want 3: %+v", len(rep.Failures), rep.Failures)
	}
	for _, f := range rep.Failures {
		if strings.HasPrefix(f.Name, "[It]") || f.Message == "" {
			t.Errorf("failure %q: %q", f.Name, f.Message)
		}
	}
	if f := rep.Failures[0]; !strings.Contains(f.Name, "volume-expand Verify if offline PVC expansion works") ||
		!strings.HasPrefix(f.Message, `[FAILED] storageclasses.storage.k8s.io "volume-expand-`) {
		t.Errorf("first failure: %+v", f)
	}
	if f := rep.Failures[2]; !strings.Contains(f.Name, "snapshotmetadata") || !strings.Contains(f.Message, "nil pointer dereference") {
		t.Errorf("panicked spec's failure: %+v", f)
	}
	for _, s := range rep.Specs {
		if s.State == "skipped" && !strings.HasPrefix(s.Message, "skipped - ") {
			t.Errorf("skipped spec %q without its reason: %q", s.Name, s.Message)
		}
		if s.Pattern == "" || s.Suite == "" {
			t.Errorf("spec without pattern or suite: %+v", s)
		}
	}
	if rep.Duration.Round(time.Second) != 197*time.Second {
		t.Errorf("duration %v, want the report's 197 s", rep.Duration)
	}
	if s := rep.String(); !strings.HasPrefix(s, "1 passed, 3 failed, 3 skipped (2 specs not chosen) in 3m17s\n") || !strings.Contains(s, "FAILED External Storage") {
		t.Errorf("String():\n%s", s)
	}
}

// TestParseE2EJUnitSetupFailure: a suite-level node that fails (no cluster)
// is a failure even though no spec ran; a report without <testsuite> is an
// error.
func TestParseE2EJUnitSetupFailure(t *testing.T) {
	const report = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="2" disabled="0" errors="0" failures="2" time="1.5">
  <testsuite name="Kubernetes e2e suite" tests="2" skipped="0" failures="2" time="1.5">
    <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="failed" time="1.4">
      <failure message="" type="failed">[FAILED] Error waiting for all pods to be running and ready</failure>
    </testcase>
    <testcase name="[It] External Storage [Driver: csi.nvmirror.io] [Testpattern: Dynamic PV (default fs)] volumeIO should write files of various sizes, verify size, validate content [Slow]" classname="Kubernetes e2e suite" status="failed" time="0">
      <failure message="" type="failed">[FAILED] SynchronizedBeforeSuite failed on Ginkgo parallel process #1</failure>
    </testcase>
  </testsuite>
</testsuites>`
	rep, err := ParseE2EJUnit(strings.NewReader(report))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 1 || len(rep.Failures) != 2 || rep.Failures[0].Name != "[SynchronizedBeforeSuite]" ||
		!strings.Contains(rep.Failures[0].Message, "pods to be running") {
		t.Errorf("%+v", rep)
	}
	if _, err := ParseE2EJUnit(strings.NewReader(`<testsuites></testsuites>`)); err == nil {
		t.Error("a report without <testsuite>: no error")
	}
	if _, err := ParseE2EJUnit(strings.NewReader(`not xml`)); err == nil {
		t.Error("not XML: no error")
	}
}

func TestE2ESuiteArgs(t *testing.T) {
	args := E2ESuiteArgs(E2ESuiteOptions{
		Kubeconfig: "/k/kubeconfig", Kubectl: "/bin/kubectl", RepoRoot: "/repo",
		Focus: E2EFocusedFocus, Skip: E2EFocusedSkip, ReportDir: "/r", Timeout: 90 * time.Minute,
	})
	for _, want := range []string{
		"-storage.testdriver=" + E2EDriverFile, "-repo-root=/repo", "-kubeconfig=/k/kubeconfig",
		"-kubectl-path=/bin/kubectl", "-provider=skeleton", "-minStartupPods=0",
		"-report-dir=/r", "-disable-log-dump", "-ginkgo.focus=" + E2EFocusedFocus,
		"-ginkgo.skip=" + E2EFocusedSkip, "-ginkgo.timeout=1h30m0s",
	} {
		if !slices.Contains(args, want) {
			t.Errorf("no %q in %q", want, args)
		}
	}
	for _, a := range args {
		if a == "-ginkgo.dry-run" || a == "-ginkgo.v" {
			t.Errorf("%s without DryRun or Verbose", a)
		}
	}
}

// TestE2ESpecList runs the built e2e.test's dry run (no cluster) with
// e2e-driver.yaml, through RunE2ESuite, and checks that it defines the specs
// of testdata/e2e-specs.txt: a new Kubernetes version, or a change of the
// driver definition, shows here with the specs it adds or removes (rewrite
// the list with -update-e2e-specs, then check the counts of
// TestE2EFocusSkip).
func TestE2ESpecList(t *testing.T) {
	tools := FindNodeTools(t)
	repo, err := vm.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	rep, err := RunE2ESuite(t, E2ESuiteOptions{
		Binary:    tools.E2ETest,
		RepoRoot:  repo,
		Focus:     `External.Storage \[Driver: csi\.nvmirror\.io\]`,
		ReportDir: t.TempDir(),
		DryRun:    true,
		Timeout:   5 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 0 || rep.Skipped != 0 || rep.Passed == 0 {
		t.Fatalf("dry run: %v", rep)
	}
	var got []string
	for _, s := range rep.Specs {
		got = append(got, s.Name)
	}
	slices.Sort(got)
	if *updateE2ESpecs {
		old, err := os.ReadFile(e2eSpecsFile)
		if err != nil {
			t.Fatal(err)
		}
		var header strings.Builder
		for _, l := range strings.SplitAfter(string(old), "\n") {
			if !strings.HasPrefix(l, "#") {
				break
			}
			header.WriteString(l)
		}
		if err := os.WriteFile(filepath.Clean(e2eSpecsFile), []byte(header.String()+strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %d specs to %s", len(got), e2eSpecsFile)
		return
	}
	want := readE2ESpecs(t)
	for _, n := range got {
		if !slices.Contains(want, n) {
			t.Errorf("new spec, not in %s: %q", e2eSpecsFile, n)
		}
	}
	for _, n := range want {
		if !slices.Contains(got, n) {
			t.Errorf("spec of %s that e2e.test no longer defines: %q", e2eSpecsFile, n)
		}
	}
}

// TestMergeE2EReports: two shards' reports add up to one of the whole set.
func TestMergeE2EReports(t *testing.T) {
	a := &E2EReport{Passed: 2, NotChosen: 98, Duration: 3 * time.Minute,
		Suites: []E2ESuiteCount{{Suite: "provisioning", Passed: 1}, {Suite: "multiVolume", Passed: 1}},
		Specs:  []E2ESpec{{Name: "a1", State: "passed"}, {Name: "a2", State: "passed"}}}
	b := &E2EReport{Passed: 1, Failed: 1, Skipped: 1, NotChosen: 97, Duration: 2 * time.Minute,
		Suites:   []E2ESuiteCount{{Suite: "provisioning", Skipped: 1}, {Suite: "volumeIO", Passed: 1}, {Suite: "volumeMode", Failed: 1}},
		Failures: []E2EFailure{{Name: "b3", Message: "boom"}},
		Specs:    []E2ESpec{{Name: "b1", State: "passed"}, {Name: "b2", State: "skipped"}, {Name: "b3", State: "failed"}}}
	m := MergeE2EReports(a, b)
	if m.Passed != 3 || m.Failed != 1 || m.Skipped != 1 || m.NotChosen != 95 {
		t.Errorf("merged counts %d/%d/%d, %d not chosen; want 3/1/1, 95", m.Passed, m.Failed, m.Skipped, m.NotChosen)
	}
	if m.Duration != 3*time.Minute {
		t.Errorf("merged duration %v, want the longest, 3m", m.Duration)
	}
	want := []E2ESuiteCount{{Suite: "multiVolume", Passed: 1}, {Suite: "provisioning", Passed: 1, Skipped: 1}, {Suite: "volumeIO", Passed: 1}, {Suite: "volumeMode", Failed: 1}}
	if !slices.Equal(m.Suites, want) {
		t.Errorf("merged suites %+v, want %+v", m.Suites, want)
	}
	if len(m.Specs) != 5 || len(m.Failures) != 1 || m.Failures[0].Name != "b3" {
		t.Errorf("merged specs %d (want 5), failures %+v", len(m.Specs), m.Failures)
	}
}

// TestE2EFullRuns: the runs E2EFullRuns makes of the full set choose it
// whole, each spec once, the immediate-binding suites' specs in the run
// that asks for Immediate binding; and of a part of it (EnvE2ESuites), what
// the part names, with no immediate-binding run when it names none of
// those suites (a name that only starts like one does not count).
func TestE2EFullRuns(t *testing.T) {
	names := readE2ESpecs(t)
	immediate := strings.Split(E2EImmediateBindingSuites, "|")
	check := func(suites string, want []string, wantRuns int) {
		t.Helper()
		runs, err := E2EFullRuns(suites)
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) != wantRuns {
			t.Errorf("E2EFullRuns(%q): %d runs, want %d", suites, len(runs), wantRuns)
		}
		seen := map[string]int{}
		for _, r := range runs {
			for _, n := range chooseE2ESpecs(t, names, r.Focus, r.Skip) {
				seen[n]++
				_, suite := ParseE2ESpecName(n)
				if slices.Contains(immediate, suite) != r.ImmediateBinding {
					t.Errorf("E2EFullRuns(%q): %s spec in a run with ImmediateBinding %v: %q", suites, suite, r.ImmediateBinding, n)
				}
			}
		}
		for _, n := range want {
			if seen[n] != 1 {
				t.Errorf("E2EFullRuns(%q) choose %q %d times, want once", suites, n, seen[n])
			}
			delete(seen, n)
		}
		for n := range seen {
			t.Errorf("E2EFullRuns(%q) choose %q, not in the set", suites, n)
		}
	}
	full := chooseE2ESpecs(t, names, E2EFullFocus, E2EFullSkip)
	check("", full, 2)
	inImmediate := 0
	for _, n := range full {
		if _, suite := ParseE2ESpecName(n); slices.Contains(immediate, suite) {
			inImmediate++
		}
	}
	// volume-modify-stress's 2 specs in 2 patterns, and one of each
	// performance suite.
	if inImmediate != 6 {
		t.Errorf("%d specs of the full set in E2EImmediateBindingSuites, want 6", inImmediate)
	}
	check("subPath|volume-modify", chooseE2ESpecs(t, names, E2EFullFocusSuites("subPath|volume-modify"), E2EFullSkip), 1)
	check("volume-modify-stress|.*-performance", chooseE2ESpecs(t, names, E2EFullFocusSuites("volume-modify-stress|.*-performance"), E2EFullSkip), 2)
	if _, err := E2EFullRuns("("); err == nil {
		t.Error("E2EFullRuns accepts an invalid regular expression")
	}
}

// TestImmediateBindingDriver: the copies differ from the driver definition
// and its StorageClass only in the class's binding mode and where the
// definition finds it.
func TestImmediateBindingDriver(t *testing.T) {
	repo, err := vm.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path, err := ImmediateBindingDriver(repo, dir)
	if err != nil {
		t.Fatal(err)
	}
	def, orig := readYAML(t, path), readYAML(t, filepath.Join(repo, E2EDriverFile))
	class, _ := def["StorageClass"].(map[string]any)["FromFile"].(string)
	if class != filepath.Join(dir, "e2e-storageclass.yaml") {
		t.Fatalf("StorageClass.FromFile %q, want the copy in %s", class, dir)
	}
	def["StorageClass"] = orig["StorageClass"]
	if !reflect.DeepEqual(def, orig) {
		t.Errorf("the copy of %s differs in more than its StorageClass", E2EDriverFile)
	}
	sc, origSC := readYAML(t, class), readYAML(t, filepath.Join(repo, e2eStorageClassFile))
	if sc["volumeBindingMode"] != "Immediate" || origSC["volumeBindingMode"] != "WaitForFirstConsumer" {
		t.Errorf("volumeBindingMode %v in the copy, %v in %s", sc["volumeBindingMode"], origSC["volumeBindingMode"], e2eStorageClassFile)
	}
	sc["volumeBindingMode"] = origSC["volumeBindingMode"]
	if !reflect.DeepEqual(sc, origSC) {
		t.Errorf("the copy of %s differs in more than its binding mode", e2eStorageClassFile)
	}
}

// readYAML decodes the YAML file at path into a map.
func readYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}
