package k8s

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Loading the images into the node's containerd is most of the node's start
// under emulation (about 3 MB/s: every byte is streamed to containerd,
// stored and digested, then unpacked and digested again; mostly the guest's
// I/O path, as SHA-256 alone runs at 70 MB/s under TCG), so the node loads
// as few bytes as it can,
// on both of its CPUs:
//
//   - images that share their first layer (ours, agnhost and the e2e
//     stand-ins are all FROM the same local debian base) are merged into one
//     docker-archive, each layer once: `ctr images import` takes an archive
//     of several images (docker save writes them so), and a layer imported
//     in another archive would still be read and digested in full before
//     containerd found it had it;
//   - the archives are split between two import queues by size, the largest
//     first (each import is mostly one CPU's work).

// nodeImage is one image the node loads.
type nodeImage struct {
	Name string // as images.txt and the pods name it
	File string // its docker-archive in the images directory
}

// importArchive is one archive the node imports and the images it holds.
type importArchive struct {
	File  string
	Size  int64
	Names []string
}

// dockerManifest is one entry of a docker-archive's manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// readDockerManifest reads the manifest.json of a docker-archive.
func readDockerManifest(path string) ([]dockerManifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: no manifest.json (not a docker-archive)", path)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var m []dockerManifest
		if err := json.NewDecoder(tr).Decode(&m); err != nil {
			return nil, fmt.Errorf("%s: manifest.json: %w", path, err)
		}
		return m, nil
	}
}

// mergeDockerArchives writes one docker-archive holding every image of
// srcs, each file (layers and configs are named by their digest) once.
func mergeDockerArchives(dst string, srcs []string) (err error) {
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	tw := tar.NewWriter(out)
	seen := map[string]bool{}
	var manifest []dockerManifest
	for _, src := range srcs {
		m, err := copyArchiveFiles(tw, src, seen)
		if err != nil {
			return err
		}
		manifest = append(manifest, m...)
	}
	b, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o444, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(b); err != nil {
		return err
	}
	return tw.Close()
}

// copyArchiveFiles copies the files of the docker-archive src not in seen
// into tw and returns its manifest. The legacy "repositories" file is
// left out: manifest.json's RepoTags name the images.
func copyArchiveFiles(tw *tar.Writer, src string, seen map[string]bool) ([]dockerManifest, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var manifest []dockerManifest
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		switch {
		case h.Name == "manifest.json":
			if err := json.NewDecoder(tr).Decode(&manifest); err != nil {
				return nil, fmt.Errorf("%s: manifest.json: %w", src, err)
			}
		case h.Name == "repositories" || seen[h.Name]:
		default:
			seen[h.Name] = true
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
			if _, err := io.Copy(tw, tr); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", src, h.Name, err)
			}
		}
	}
	if len(manifest) == 0 {
		return nil, fmt.Errorf("%s: no manifest.json (not a docker-archive)", src)
	}
	return manifest, nil
}

// planImports writes into stage the archives the node imports for images
// (found in dir): hard links (or copies) of the images' own archives, and
// one merged archive per group of images sharing a first layer.
func planImports(dir string, images []nodeImage, stage string) ([]importArchive, error) {
	var order []string // first layers, in images' order
	groups := map[string][]nodeImage{}
	for _, im := range images {
		m, err := readDockerManifest(filepath.Join(dir, im.File))
		if err != nil {
			return nil, err
		}
		if len(m) != 1 || len(m[0].Layers) == 0 {
			return nil, fmt.Errorf("%s: want one image with layers, manifest has %d images", im.File, len(m))
		}
		key := m[0].Layers[0]
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], im)
	}
	var archives []importArchive
	for i, key := range order {
		g := groups[key]
		a := importArchive{}
		for _, im := range g {
			a.Names = append(a.Names, im.Name)
		}
		if len(g) == 1 {
			a.File = g[0].File
			if err := linkOrCopy(filepath.Join(dir, a.File), filepath.Join(stage, a.File)); err != nil {
				return nil, err
			}
		} else {
			a.File = fmt.Sprintf("merged-%d.tar", i)
			var srcs []string
			for _, im := range g {
				srcs = append(srcs, filepath.Join(dir, im.File))
			}
			if err := mergeDockerArchives(filepath.Join(stage, a.File), srcs); err != nil {
				return nil, fmt.Errorf("merging %s: %w", strings.Join(a.Names, ", "), err)
			}
		}
		fi, err := os.Stat(filepath.Join(stage, a.File))
		if err != nil {
			return nil, err
		}
		a.Size = fi.Size()
		archives = append(archives, a)
	}
	return archives, nil
}

// linkOrCopy hard-links src to dst when they are on one filesystem and
// copies it otherwise.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// importQueues splits archives into n queues of about equal bytes: the
// largest first, each to the queue with the fewest bytes so far.
func importQueues(archives []importArchive, n int) [][]importArchive {
	sorted := slices.Clone(archives)
	slices.SortStableFunc(sorted, func(a, b importArchive) int {
		switch {
		case a.Size > b.Size:
			return -1
		case a.Size < b.Size:
			return 1
		}
		return 0
	})
	queues := make([][]importArchive, n)
	load := make([]int64, n)
	for _, a := range sorted {
		i := 0
		for j := range load {
			if load[j] < load[i] {
				i = j
			}
		}
		queues[i] = append(queues[i], a)
		load[i] += a.Size
	}
	return queues
}
