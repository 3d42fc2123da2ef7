package vm

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
)

// moduleName is the canonical name of a kernel module file: the base name
// without the .ko suffix (and compression suffix), with '-' as '_', which is
// how the kernel and modprobe compare module names.
func moduleName(file string) string {
	base := path.Base(file)
	for _, suffix := range []string{".xz", ".zst", ".gz"} {
		base = strings.TrimSuffix(base, suffix)
	}
	base = strings.TrimSuffix(base, ".ko")
	return strings.ReplaceAll(base, "-", "_")
}

// moduleDeps is the parsed modules.dep of one kernel: each module's file
// (relative to /lib/modules/<version>) and its direct dependencies.
type moduleDeps struct {
	file map[string]string
	deps map[string][]string
}

// parseModulesDep reads modules.dep ("kernel/a.ko: kernel/b.ko kernel/c.ko").
func parseModulesDep(r io.Reader) (moduleDeps, error) {
	md := moduleDeps{file: map[string]string{}, deps: map[string][]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		mod, deps, ok := strings.Cut(text, ":")
		if !ok {
			return md, fmt.Errorf("modules.dep line %d: no ':' in %q", line, text)
		}
		name := moduleName(mod)
		md.file[name] = mod
		for _, d := range strings.Fields(deps) {
			md.deps[name] = append(md.deps[name], moduleName(d))
		}
	}
	return md, sc.Err()
}

// loadOrder returns the files of the wanted modules and of everything they
// depend on, dependencies first, each once: the order in which insmod (which,
// unlike modprobe, does not resolve dependencies) must load them.
func (md moduleDeps) loadOrder(wanted []string) ([]string, error) {
	var order []string
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, name), " -> "))
		}
		file, ok := md.file[name]
		if !ok {
			if len(chain) == 0 {
				return fmt.Errorf("module %q is not in modules.dep (built in, or not shipped by this kernel)", name)
			}
			return fmt.Errorf("module %q (needed by %s) is not in modules.dep", name, chain[len(chain)-1])
		}
		state[name] = 1
		for _, d := range md.deps[name] {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, file)
		return nil
	}
	for _, w := range wanted {
		if err := visit(moduleName(w), nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}
