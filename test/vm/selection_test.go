package vm

import (
	"os/exec"
	"reflect"
	"slices"
	"testing"
)

func TestSplitPattern(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want [][]string
	}{
		{"TestA", [][]string{{"TestA"}}},
		{"TestA/sub", [][]string{{"TestA", "sub"}}},
		{"TestA/x|TestB", [][]string{{"TestA", "x"}, {"TestB"}}},
		{"^(TestA|TestB)$/y", [][]string{{"^(TestA|TestB)$", "y"}}},
		{`[/|]x\/y`, [][]string{{`[/|]x\/y`}}},
		{"", [][]string{{""}}},
	} {
		if got := splitPattern(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitPattern(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSelectTests(t *testing.T) {
	all := []string{"TestDataPath", "TestDemo", "TestAuthKernelBoots", "TestAuthConnect"}
	const authOnly, noAuth = "^TestAuth", "^TestAuth"
	for _, tc := range []struct {
		name                  string
		pattern, skip, envRun string
		tests, own            []string
		run, guestSkip        string
	}{
		{name: "default boot", skip: noAuth,
			tests: []string{"TestDataPath", "TestDemo"}, own: []string{"TestDataPath", "TestDemo"}, guestSkip: noAuth},
		{name: "auth boot", pattern: authOnly,
			tests: []string{"TestAuthKernelBoots", "TestAuthConnect"}, own: []string{"TestAuthKernelBoots", "TestAuthConnect"}, run: authOnly},
		{name: "env names a default test: default boot", skip: noAuth, envRun: "TestDemo",
			tests: []string{"TestDemo"}, own: []string{"TestDataPath", "TestDemo"}, run: "TestDemo", guestSkip: noAuth},
		{name: "env names a default test: auth boot runs nothing", pattern: authOnly, envRun: "TestDemo",
			own: []string{"TestAuthKernelBoots", "TestAuthConnect"}, run: "TestDemo", guestSkip: "^(TestDemo)$"},
		{name: "env names both: auth boot skips the other's", pattern: authOnly, envRun: "TestDemo$|TestAuthConnect",
			tests: []string{"TestAuthConnect"}, own: []string{"TestAuthKernelBoots", "TestAuthConnect"},
			run: "TestDemo$|TestAuthConnect", guestSkip: "^(TestDemo)$"},
		{name: "env names both: default boot's Skip already covers the auth test", skip: noAuth, envRun: "TestDemo$|TestAuthConnect",
			tests: []string{"TestDemo"}, own: []string{"TestDataPath", "TestDemo"},
			run: "TestDemo$|TestAuthConnect", guestSkip: noAuth},
		{name: "env with a subtest part keeps it", skip: noAuth, envRun: "TestDemo/outage",
			tests: []string{"TestDemo"}, own: []string{"TestDataPath", "TestDemo"}, run: "TestDemo/outage", guestSkip: noAuth},
		{name: "a Skip with a subtest part leaves the test in", skip: "TestDemo/slow|^TestAuth",
			tests: []string{"TestDataPath", "TestDemo"}, own: []string{"TestDataPath", "TestDemo"}, guestSkip: "TestDemo/slow|^TestAuth"},
		{name: "env plus an own Skip are combined", pattern: "^Test(Demo|Auth)", skip: "Boots", envRun: "Test",
			tests: []string{"TestDemo", "TestAuthConnect"}, own: []string{"TestDemo", "TestAuthConnect"},
			run: "Test", guestSkip: "Boots|^(TestDataPath)$"},
		{name: "nothing matches the pattern", pattern: "^TestNope", run: "^TestNope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := selectTests(all, tc.pattern, tc.skip, tc.envRun)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(sel.Tests, tc.tests) || !slices.Equal(sel.OwnTests, tc.own) {
				t.Errorf("tests %q own %q, want %q own %q", sel.Tests, sel.OwnTests, tc.tests, tc.own)
			}
			if sel.Run != tc.run || sel.Skip != tc.guestSkip {
				t.Errorf("guest -test.run %q -test.skip %q, want %q %q", sel.Run, sel.Skip, tc.run, tc.guestSkip)
			}
		})
	}
	if _, err := selectTests(all, "", "", "Test("); err == nil {
		t.Error("a bad NVMIRROR_VM_RUN pattern was accepted")
	}
}

func TestIsTestName(t *testing.T) {
	for name, want := range map[string]bool{
		"Test": true, "TestX": true, "Test_x": true, "Test1": true,
		"Testify": false, "test": false, "Example": false, "TestÄ": true, "Testé": false,
	} {
		if got := isTestName(name); got != want {
			t.Errorf("isTestName(%q) = %v", name, got)
		}
	}
}

// TestListTestsGuestPackage lists the real guest package: vmguest files are
// seen, host-only ones (kernel_test.go) are not.
func TestListTestsGuestPackage(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not in PATH")
	}
	repo, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	tests, err := listTests(repo, goBin, "./test/kernel")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(tests, "TestDataPath") {
		t.Errorf("TestDataPath (a vmguest test) not listed: %v", tests)
	}
	if slices.Contains(tests, "TestRealKernel") {
		t.Errorf("TestRealKernel (host side, !vmguest) listed: %v", tests)
	}
}
