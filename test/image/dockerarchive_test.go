package image_test

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// dockerArchive is an image saved as a docker-archive tar (what `docker
// save` and `buildah push IMAGE docker-archive:FILE:NAME` write, and
// `ctr images import` reads): manifest.json naming the config and the layer
// tars, which are uncompressed. It is read in place: the layers are
// sections of the file, the files in them sections of those.
type dockerArchive struct {
	f        *os.File
	members  map[string]*io.SectionReader // the archive's own files
	RepoTags []string
	Config   imageConfig
	// Files is the image's file system: every layer applied in order,
	// whiteouts included, by absolute path ("/usr/local/bin/x").
	Files map[string]*imageFile
}

// imageConfig is the part of the image configuration the checks read.
type imageConfig struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		User       string            `json:"User"`
		Env        []string          `json:"Env"`
		Entrypoint []string          `json:"Entrypoint"`
		Cmd        []string          `json:"Cmd"`
		WorkingDir string            `json:"WorkingDir"`
		Labels     map[string]string `json:"Labels"`
	} `json:"config"`
	RootFS struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// imageFile is one entry of the image's file system.
type imageFile struct {
	Typeflag byte
	Mode     fs.FileMode
	Linkname string            // symbolic link target, or a hard link's file ("/abs/path")
	data     *io.SectionReader // regular files
}

// countingReader tells how far into the underlying reader tar.Reader is:
// right after Next, that is where the entry's data starts (tar reads its
// headers block by block, never ahead). It seeks, so tar skips the data it
// is not asked for instead of reading it.
type countingReader struct {
	r *io.SectionReader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) Seek(offset int64, whence int) (int64, error) {
	n, err := c.r.Seek(offset, whence)
	if err == nil {
		c.n = n
	}
	return n, err
}

// tarSections lists the entries of the tar in r with a section of r for
// each one's data, calling fn in order.
func tarSections(r *io.SectionReader, fn func(h *tar.Header, data *io.SectionReader) error) error {
	cr := &countingReader{r: io.NewSectionReader(r, 0, r.Size())}
	tr := tar.NewReader(cr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(h, io.NewSectionReader(r, cr.n, h.Size)); err != nil {
			return err
		}
	}
}

// openDockerArchive reads the archive's manifest (it must hold exactly one
// image), its config, and applies its layers.
func openDockerArchive(file string) (*dockerArchive, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	a := &dockerArchive{f: f, members: map[string]*io.SectionReader{}, Files: map[string]*imageFile{}}
	err = tarSections(io.NewSectionReader(f, 0, fi.Size()), func(h *tar.Header, data *io.SectionReader) error {
		if h.Typeflag == tar.TypeReg {
			a.members[path.Clean(h.Name)] = data
		}
		return nil
	})
	if err == nil {
		err = a.load()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return a, nil
}

func (a *dockerArchive) Close() error { return a.f.Close() }

func (a *dockerArchive) readJSON(name string, v any) error {
	m, ok := a.members[path.Clean(name)]
	if !ok {
		return fmt.Errorf("no %s in the archive", name)
	}
	return json.NewDecoder(io.NewSectionReader(m, 0, m.Size())).Decode(v)
}

func (a *dockerArchive) load() error {
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := a.readJSON("manifest.json", &manifest); err != nil {
		return err
	}
	if len(manifest) != 1 {
		return fmt.Errorf("manifest.json lists %d images, want 1", len(manifest))
	}
	m := manifest[0]
	a.RepoTags = m.RepoTags
	if err := a.readJSON(m.Config, &a.Config); err != nil {
		return err
	}
	if len(m.Layers) != len(a.Config.RootFS.DiffIDs) {
		return fmt.Errorf("%d layers, the config has %d diff_ids", len(m.Layers), len(a.Config.RootFS.DiffIDs))
	}
	for _, l := range m.Layers {
		layer, ok := a.members[path.Clean(l)]
		if !ok {
			return fmt.Errorf("layer %s missing", l)
		}
		if err := a.apply(layer); err != nil {
			return fmt.Errorf("layer %s: %w", l, err)
		}
	}
	return nil
}

// apply adds a layer's files over the ones below: a whiteout .wh.NAME
// removes NAME (and what is under it), an opaque directory
// (.wh..wh..opq) hides everything the lower layers had in it.
func (a *dockerArchive) apply(layer *io.SectionReader) error {
	removeTree := func(p string) {
		delete(a.Files, p)
		prefix := strings.TrimSuffix(p, "/") + "/"
		for k := range a.Files {
			if strings.HasPrefix(k, prefix) {
				delete(a.Files, k)
			}
		}
	}
	added := map[string]bool{}
	return tarSections(layer, func(h *tar.Header, data *io.SectionReader) error {
		p := path.Clean("/" + h.Name)
		dir, base := path.Split(p)
		dir = path.Clean(dir)
		switch {
		case base == ".wh..wh..opq":
			prefix := strings.TrimSuffix(dir, "/") + "/"
			for k := range a.Files {
				if strings.HasPrefix(k, prefix) && !added[k] {
					delete(a.Files, k)
				}
			}
			return nil
		case strings.HasPrefix(base, ".wh."):
			removeTree(path.Join(dir, strings.TrimPrefix(base, ".wh.")))
			return nil
		}
		if old, ok := a.Files[p]; ok && (old.Typeflag != tar.TypeDir || h.Typeflag != tar.TypeDir) {
			removeTree(p) // replaced (a directory over a directory merges)
		}
		f := &imageFile{Typeflag: h.Typeflag, Mode: h.FileInfo().Mode()}
		switch h.Typeflag {
		case tar.TypeReg:
			f.data = data
		case tar.TypeSymlink:
			f.Linkname = h.Linkname
		case tar.TypeLink:
			f.Linkname = path.Clean("/" + h.Linkname)
			target, ok := a.Files[f.Linkname]
			if !ok {
				return fmt.Errorf("%s: hard link to %s, which is not there", p, h.Linkname)
			}
			f.data = target.data
		}
		a.Files[p] = f
		added[p] = true
		return nil
	})
}

var errNotFound = errors.New("no such file in the image")

// resolve follows p's symbolic links inside the image (absolute targets
// from the image's root, relative ones from the link's directory, in every
// component) and returns the file and its real path.
func (a *dockerArchive) resolve(p string) (*imageFile, string, error) {
	links := 0
	rest := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	cur := "/"
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, name)
		f, ok := a.Files[next]
		if !ok {
			return nil, next, fmt.Errorf("%s: %w", next, errNotFound)
		}
		if f.Typeflag != tar.TypeSymlink {
			if len(rest) > 0 && f.Typeflag != tar.TypeDir {
				return nil, next, fmt.Errorf("%s: not a directory", next)
			}
			cur = next
			continue
		}
		if links++; links > 40 {
			return nil, next, fmt.Errorf("%s: too many symbolic links", p)
		}
		target := f.Linkname
		if !strings.HasPrefix(target, "/") {
			target = path.Join(cur, target)
		}
		rest = append(strings.Split(strings.Trim(path.Clean(target), "/"), "/"), rest...)
		cur = "/"
	}
	f, ok := a.Files[cur]
	if !ok {
		return nil, cur, fmt.Errorf("%s: %w", cur, errNotFound)
	}
	return f, cur, nil
}

// env returns the value of the config's environment variable k.
func (c imageConfig) env(k string) string {
	for _, kv := range c.Config.Env {
		if v, ok := strings.CutPrefix(kv, k+"="); ok {
			return v
		}
	}
	return ""
}

// lookPath finds a program as a shell of the image would, in the config's
// PATH: an executable regular file, symbolic links followed.
func (a *dockerArchive) lookPath(prog string) (string, *imageFile, error) {
	for _, dir := range strings.Split(a.Config.env("PATH"), ":") {
		if dir == "" {
			continue
		}
		f, real, err := a.resolve(path.Join(dir, prog))
		if err != nil {
			continue
		}
		if f.Typeflag == tar.TypeReg || f.Typeflag == tar.TypeLink {
			if f.Mode&0o111 != 0 {
				return real, f, nil
			}
		}
	}
	return "", nil, fmt.Errorf("%s: not an executable in PATH=%s", prog, a.Config.env("PATH"))
}
