package image_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// program is an external program nvmirror runs, the Debian package that
// provides it, and why it is needed.
type program struct {
	name, pkg, why string
	// mountUtils: run by k8s.io/mount-utils on the driver's behalf; the
	// literal is looked for in that module's source at the version in
	// go.mod, so an upgrade that changes the tools is noticed.
	mountUtils string
}

// programs is every program the code runs in the runtime image. nvmirror's
// own exec calls are found in its source (TestEveryExecCallIsKnown); those of
// k8s.io/mount-utils, which pkg/driver uses to format, mount and grow, are
// listed from that library's source.
var programs = []program{
	{name: "mdadm", pkg: "mdadm", why: "pkg/mdraid: create, assemble, grow, re-add, fail, stop arrays"},
	{name: "mount", pkg: "mount", why: "staging and publishing (mount-utils Mounter)", mountUtils: `defaultMountCommand = "mount"`},
	{name: "umount", pkg: "mount", why: "unstaging and unpublishing (mount-utils Mounter)", mountUtils: `"umount"`},
	{name: "blkid", pkg: "util-linux", why: "is the device blank, which filesystem (SafeFormatAndMount, ResizeFs)", mountUtils: `"blkid"`},
	{name: "fsck", pkg: "util-linux", why: "checks an ext4 filesystem before mounting it (SafeFormatAndMount)", mountUtils: `"fsck"`},
	{name: "fsck.ext4", pkg: "e2fsprogs", why: "what fsck runs for ext4", mountUtils: `"fsck"`},
	{name: "mkfs.ext4", pkg: "e2fsprogs", why: "formats ext4 volumes", mountUtils: `"mkfs."`},
	{name: "mkfs.xfs", pkg: "xfsprogs", why: "formats xfs volumes", mountUtils: `"mkfs."`},
	{name: "resize2fs", pkg: "e2fsprogs", why: "grows ext4 after expansion (ResizeFs)", mountUtils: `"resize2fs"`},
	{name: "xfs_growfs", pkg: "xfsprogs", why: "grows xfs after expansion (ResizeFs)", mountUtils: `"xfs_growfs"`},
}

func programNamed(name string) *program {
	for i := range programs {
		if programs[i].name == name {
			return &programs[i]
		}
	}
	return nil
}

// execSite is a call that runs a program, found in nvmirror's source.
type execSite struct {
	pos     token.Position
	program string // "" when it cannot be told statically
}

// execCalls finds every Command/CommandContext/LookPath call in the non-test
// Go files of pkg/ and cmd/, and the program each names (a string literal,
// or a string constant of the same package). Test helpers and fakes are
// skipped: they do not run in the image.
func execCalls(t *testing.T) []execSite {
	t.Helper()
	fset := token.NewFileSet()
	var sites []execSite
	for _, top := range []string{"pkg", "cmd"} {
		err := filepath.WalkDir(filepath.Join(repoRoot, top), func(dir string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return err
			}
			base := filepath.Base(dir)
			if strings.HasSuffix(base, "test") || base == "fake" || base == "fakeagent" || base == "testdata" {
				return filepath.SkipDir
			}
			pkgs, err := parser.ParseDir(fset, dir, func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
			if err != nil {
				return err
			}
			for _, p := range pkgs {
				consts := map[string]string{}
				for _, f := range p.Files {
					for _, decl := range f.Decls {
						gd, ok := decl.(*ast.GenDecl)
						if !ok || gd.Tok != token.CONST {
							continue
						}
						for _, spec := range gd.Specs {
							vs := spec.(*ast.ValueSpec)
							for i, n := range vs.Names {
								if i < len(vs.Values) {
									if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
										consts[n.Name], _ = strconv.Unquote(lit.Value)
									}
								}
							}
						}
					}
				}
				for _, f := range p.Files {
					ast.Inspect(f, func(n ast.Node) bool {
						call, ok := n.(*ast.CallExpr)
						if !ok {
							return true
						}
						sel, ok := call.Fun.(*ast.SelectorExpr)
						if !ok {
							return true
						}
						argIdx := -1
						switch sel.Sel.Name {
						case "Command", "LookPath":
							argIdx = 0
						case "CommandContext":
							argIdx = 1
						}
						if argIdx < 0 || len(call.Args) <= argIdx {
							return true
						}
						site := execSite{pos: fset.Position(call.Pos())}
						switch a := call.Args[argIdx].(type) {
						case *ast.BasicLit:
							site.program, _ = strconv.Unquote(a.Value)
						case *ast.Ident:
							site.program = consts[a.Name]
						}
						sites = append(sites, site)
						return true
					})
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return sites
}

// TestEveryExecCallIsKnown: every program nvmirror's own code runs is in the
// table above (and so checked against the image), and can be told from the
// source: a computed program name would escape this check.
func TestEveryExecCallIsKnown(t *testing.T) {
	sites := execCalls(t)
	found := map[string]bool{}
	for _, s := range sites {
		rel, _ := filepath.Rel(repoRoot, s.pos.Filename)
		switch {
		case s.program == "":
			t.Errorf("%s:%d: runs a program this test cannot name; use a string constant", rel, s.pos.Line)
		case programNamed(s.program) == nil:
			t.Errorf("%s:%d: runs %q, which the image check does not know: add it to programs with its Debian package (and to the Dockerfile)", rel, s.pos.Line, s.program)
		default:
			found[s.program] = true
		}
	}
	if !found["mdadm"] {
		t.Error("no call running mdadm found: is the scan still looking at pkg/mdraid?")
	}
}

// TestMountUtilsPrograms: the programs attributed to k8s.io/mount-utils are
// still what that library runs at the version in go.mod, the driver still
// uses the parts that run them, and every filesystem a StorageClass may ask
// for has its mkfs and grow tool.
func TestMountUtilsPrograms(t *testing.T) {
	// go mod download (not go list -m): it fetches the module when this
	// machine's cache lacks it, and prints where it is.
	cmd := exec.Command("go", "mod", "download", "-json", "k8s.io/mount-utils")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download k8s.io/mount-utils: %v", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download k8s.io/mount-utils: %v: %s", err, out)
	}
	dir := mod.Dir
	var src strings.Builder
	for _, f := range []string{"mount.go", "mount_linux.go", "resizefs_linux.go"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("mount-utils source: %v", err)
		}
		src.Write(b)
	}
	for _, p := range programs {
		if p.mountUtils != "" && !strings.Contains(src.String(), p.mountUtils) {
			t.Errorf("%s: k8s.io/mount-utils (%s) no longer contains %s", p.name, dir, p.mountUtils)
		}
	}
	var driver strings.Builder
	files, _ := filepath.Glob(filepath.Join(repoRoot, "pkg", "driver", "*.go"))
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			b, _ := os.ReadFile(f)
			driver.Write(b)
		}
	}
	for _, use := range []string{"FormatAndMount(", "NewResizeFs(", "GetDiskFormat(", ".Unmount("} {
		if !strings.Contains(driver.String(), use) {
			t.Logf("pkg/driver no longer calls %s: the programs it implied may be gone", use)
		}
	}
	for _, fs := range []string{storageclass.FSExt4, storageclass.FSXFS} {
		if programNamed("mkfs."+fs) == nil {
			t.Errorf("filesystem %s: no mkfs.%s in the table", fs, fs)
		}
	}
}

// runtimePackages returns the packages the runtime stage's apt-get install
// names.
func runtimePackages(t *testing.T) []string {
	t.Helper()
	_, stages := parseDockerfile(t, filepath.Join(repoRoot, "Dockerfile"))
	var pkgs []string
	for _, in := range stages[len(stages)-1].instructions {
		if in.cmd != "RUN" {
			continue
		}
		_, rest, ok := strings.Cut(in.args, "apt-get install")
		if !ok {
			continue
		}
		rest, _, _ = strings.Cut(rest, "&&")
		for _, f := range strings.Fields(rest) {
			if !strings.HasPrefix(f, "-") {
				pkgs = append(pkgs, f)
			}
		}
	}
	if len(pkgs) == 0 {
		t.Fatal("the runtime stage installs no package")
	}
	return pkgs
}

// TestRuntimeInstallsEveryProgram: the runtime stage installs the package of
// every program in the table. On a Debian machine the table itself is
// checked too: dpkg must say that package provides that program.
func TestRuntimeInstallsEveryProgram(t *testing.T) {
	installed := runtimePackages(t)
	t.Logf("runtime packages: %v", installed)
	_, haveDpkg := exec.LookPath("dpkg")
	for _, p := range programs {
		if !slices.Contains(installed, p.pkg) {
			t.Errorf("%s (%s) comes from package %s, which the runtime stage does not install", p.name, p.why, p.pkg)
		}
		if haveDpkg != nil {
			continue
		}
		// Debian 12 registers the files under /sbin and /bin (not merged
		// into /usr in dpkg's database); newer releases under /usr.
		owner := ""
		for _, d := range []string{"/sbin", "/usr/sbin", "/bin", "/usr/bin"} {
			if out, err := exec.Command("dpkg", "-S", d+"/"+p.name).Output(); err == nil {
				owner, _, _ = strings.Cut(string(out), ":")
				break
			}
		}
		if owner == "" {
			t.Logf("%s: not installed on this machine, its package is not verified", p.name)
		} else if owner != p.pkg {
			t.Errorf("%s is provided by %s here, the table says %s", p.name, owner, p.pkg)
		}
	}
}
