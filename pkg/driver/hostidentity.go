package driver

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/nvmirror/nvmirror/pkg/atomicfile"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

// HostIdentity is the node's NVMe host identity. The kernel refuses one host
// ID under two host NQNs, and the storage nodes admit hosts by NQN, so both
// must be stable across plugin restarts and shared with any nvme-cli use on
// the host: they live in the standard /etc/nvme files.
type HostIdentity struct {
	NQN string // e.g. nqn.2014-08.org.nvmexpress:uuid:<uuid>
	ID  string // a UUID
}

const (
	hostNQNFile   = "etc/nvme/hostnqn"
	hostIDFile    = "etc/nvme/hostid"
	uuidNQNPrefix = "nqn.2014-08.org.nvmexpress:uuid:"
)

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// LoadHostIdentity reads root/etc/nvme/hostnqn and root/etc/nvme/hostid,
// creating what is missing: a fresh NQN of the UUID form, and a host ID equal
// to that UUID (nvme-cli's convention, so both tools agree). Files are written
// atomically, so a crash never leaves a half-written identity. Existing files
// are validated, never rewritten: an admin's identity wins.
func LoadHostIdentity(root string) (HostIdentity, error) {
	nqnPath := filepath.Join(root, hostNQNFile)
	idPath := filepath.Join(root, hostIDFile)
	// /etc/nvme exists once nvme-cli is installed; a bare host lacks it.
	if err := os.MkdirAll(filepath.Dir(nqnPath), 0o755); err != nil {
		return HostIdentity{}, err
	}
	nqn, err := readTrimmed(nqnPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		u, err := newUUID()
		if err != nil {
			return HostIdentity{}, err
		}
		nqn = uuidNQNPrefix + u
		if err := atomicfile.Write(nqnPath, []byte(nqn+"\n"), 0o644); err != nil {
			return HostIdentity{}, fmt.Errorf("create host NQN: %w", err)
		}
	case err != nil:
		return HostIdentity{}, err
	}
	if err := nvmeof.ValidateNQN(nqn); err != nil {
		return HostIdentity{}, fmt.Errorf("host NQN in %s: %w", nqnPath, err)
	}
	id, err := readTrimmed(idPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if u, ok := strings.CutPrefix(nqn, uuidNQNPrefix); ok && uuidPattern.MatchString(u) {
			id = strings.ToLower(u)
		} else if id, err = newUUID(); err != nil {
			return HostIdentity{}, err
		}
		if err := atomicfile.Write(idPath, []byte(id+"\n"), 0o644); err != nil {
			return HostIdentity{}, fmt.Errorf("create host ID: %w", err)
		}
	case err != nil:
		return HostIdentity{}, err
	}
	if !uuidPattern.MatchString(id) {
		return HostIdentity{}, fmt.Errorf("host ID in %s is %q, not a UUID", idPath, id)
	}
	return HostIdentity{NQN: nqn, ID: id}, nil
}

func readTrimmed(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		// An empty file (a crash of some other tool) counts as missing
		// rather than as an identity.
		return "", fs.ErrNotExist
	}
	return s, nil
}

// newUUID returns a random (version 4) UUID.
func newUUID() (string, error) {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return "", err
	}
	u[6] = (u[6] & 0x0f) | 0x40
	u[8] = (u[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), nil
}
