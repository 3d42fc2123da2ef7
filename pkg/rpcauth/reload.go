package rpcauth

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// fileStamp tells a file's versions apart without reading it: a Kubernetes
// Secret update swaps a symlink to a new file (another inode), an editor or
// cert-manager's writer changes the size or the modification time.
type fileStamp struct {
	mod   time.Time
	size  int64
	inode uint64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	s := fileStamp{mod: fi.ModTime(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.inode = st.Ino
	}
	return s, nil
}

// reloading holds what was loaded from some files and loads it again when
// one of them changes, checked (by stat) each time it is asked for: on
// every TLS handshake, so a rotated certificate is used from the next
// connection on, without a restart. A change that does not load (a
// certificate already replaced while its key is not yet, a half-written
// file) keeps the last good value, is logged, and is tried again next time.
type reloading[T any] struct {
	what  string
	paths []string
	load  func() (T, error)

	mu     sync.Mutex
	stamps []fileStamp
	val    T
	loaded bool
}

func newReloading[T any](what string, load func() (T, error), paths ...string) (*reloading[T], error) {
	r := &reloading[T]{what: what, paths: paths, load: load}
	if _, err := r.get(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *reloading[T]) get() (T, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamps := make([]fileStamp, len(r.paths))
	var statErr error
	for i, p := range r.paths {
		s, err := stampOf(p)
		if err != nil && statErr == nil {
			statErr = err
		}
		stamps[i] = s
	}
	if r.loaded && statErr == nil && slicesEqual(stamps, r.stamps) {
		return r.val, nil
	}
	v, err := r.load()
	if err == nil && statErr != nil {
		err = statErr
	}
	if err != nil {
		if r.loaded {
			klog.ErrorS(err, "Keeping the loaded TLS material: its files changed but do not load", "what", r.what, "files", r.paths)
			return r.val, nil
		}
		var zero T
		return zero, err
	}
	if r.loaded {
		klog.InfoS("Reloaded TLS material", "what", r.what, "files", r.paths)
	}
	r.val, r.stamps, r.loaded = v, stamps, true
	return v, nil
}

func slicesEqual(a, b []fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].mod.Equal(b[i].mod) || a[i].size != b[i].size || a[i].inode != b[i].inode {
			return false
		}
	}
	return true
}

// keyPairFiles is a certificate and its key, reloaded when they change.
func keyPairFiles(certFile, keyFile string) (*reloading[*tls.Certificate], error) {
	return newReloading("certificate", func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load certificate %s / key %s: %w", certFile, keyFile, err)
		}
		return &c, nil
	}, certFile, keyFile)
}

// caFile is a trust bundle (one or more PEM CA certificates), reloaded when
// it changes: a CA rotation puts the old and the new CA in it first.
func caBundleFile(file string) (*reloading[*x509.CertPool], error) {
	return newReloading("CA bundle", func() (*x509.CertPool, error) { return loadCertPool(file) }, file)
}
