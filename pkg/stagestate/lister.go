package stagestate

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Lister lists the volumes recorded in a state directory as ListVolumes
// does, for a caller that asks again and again (the healer, every cycle):
// it lists the directory and looks at each file's inode, size and
// modification time, and reads and parses again only a file that changed.
// Save writes a new file and renames it over the old one, so every change
// is a new inode; size and time catch a file changed in place. It is safe
// for concurrent use; the volumes it returns share their Replicas with
// later calls and must not be modified.
type Lister struct {
	dir   string
	mu    sync.Mutex
	files map[string]listedFile
}

type listedFile struct {
	ino   uint64
	size  int64
	mtime time.Time
	vol   Volume
	ok    bool // vol was recorded (a state without a volume ID is skipped)
}

// NewLister returns a Lister of stateDir.
func NewLister(stateDir string) *Lister {
	return &Lister{dir: stateDir, files: map[string]listedFile{}}
}

// Volumes returns the volumes recorded in the directory, ordered by ID.
func (l *Lister) Volumes() ([]Volume, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	entries, err := os.ReadDir(l.dir)
	if errors.Is(err, fs.ErrNotExist) {
		clear(l.files)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]Volume, 0, len(entries))
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since the listing (NodeUnstage)
		}
		if err != nil {
			return nil, err
		}
		var ino uint64
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		seen[name] = true
		f, known := l.files[name]
		if !known || ino == 0 || f.ino != ino || f.size != info.Size() || !f.mtime.Equal(info.ModTime()) {
			st, err := readListed(filepath.Join(l.dir, name))
			if errors.Is(err, fs.ErrNotExist) {
				delete(l.files, name)
				continue
			}
			if err != nil {
				delete(l.files, name)
				return nil, err
			}
			f = listedFile{ino: ino, size: info.Size(), mtime: info.ModTime()}
			if st.VolumeID != "" {
				f.vol, f.ok = volumeOf(st), true
			}
			l.files[name] = f
		}
		if f.ok {
			out = append(out, f.vol)
		}
	}
	for name := range l.files {
		if !seen[name] {
			delete(l.files, name)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VolumeID < out[j].VolumeID })
	return out, nil
}
