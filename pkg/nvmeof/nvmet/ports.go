package nvmet

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

// Port is an nvmet port (a listener).
type Port struct {
	ID         int
	Transport  string // "tcp"
	AdrFam     string // "ipv4" or "ipv6"; derived from TrAddr when empty
	TrAddr     string
	TrSvcID    string
	Subsystems []string // NQNs exported on this port
}

// normalizePort validates p and fills defaults: transport tcp, canonical
// address, address family from the address.
func normalizePort(p Port) (Port, error) {
	if p.ID < 0 || p.ID > 65535 {
		return Port{}, fmt.Errorf("%w: port ID %d is outside 0-65535", nvmeof.ErrInvalidArgument, p.ID)
	}
	if p.Transport == "" {
		p.Transport = "tcp"
	}
	if p.Transport != "tcp" {
		return Port{}, fmt.Errorf("%w: port %d: transport %q is not supported (only tcp)", nvmeof.ErrInvalidArgument, p.ID, p.Transport)
	}
	a, err := nvmeof.ParseIP("port traddr", p.TrAddr)
	if err != nil {
		return Port{}, fmt.Errorf("port %d: %w", p.ID, err)
	}
	p.TrAddr = a.String()
	fam := "ipv6"
	if a.Is4() {
		fam = "ipv4"
	}
	if p.AdrFam == "" {
		p.AdrFam = fam
	} else if p.AdrFam != fam {
		return Port{}, fmt.Errorf("%w: port %d: address family %q does not match address %s (%s)",
			nvmeof.ErrInvalidArgument, p.ID, p.AdrFam, p.TrAddr, fam)
	}
	if _, err := nvmeof.ParsePort("port trsvcid", p.TrSvcID); err != nil {
		return Port{}, fmt.Errorf("port %d: %w", p.ID, err)
	}
	for _, s := range p.Subsystems {
		if err := validateSubsysNQN(s); err != nil {
			return Port{}, fmt.Errorf("port %d: %w", p.ID, err)
		}
	}
	return p, nil
}

func (p Port) addrString() string {
	return fmt.Sprintf("%s %s %s:%s", p.Transport, p.AdrFam, p.TrAddr, p.TrSvcID)
}

func (p Port) sameAddress(q Port) bool {
	return p.Transport == q.Transport && p.AdrFam == q.AdrFam && p.TrAddr == q.TrAddr && p.TrSvcID == q.TrSvcID
}

// EnsurePort creates port p.ID with p's address if missing, then links the
// subsystems listed in p.Subsystems (others already linked stay). An
// existing port with another address is rewritten only when no subsystem
// is linked to it (the kernel refuses address changes on an enabled port);
// otherwise nvmeof.ErrBusy names both addresses. Another port already using the
// same address is nvmeof.ErrBusy too (it would fail with EADDRINUSE on link).
func (t *Target) EnsurePort(p Port) error {
	p, err := normalizePort(p)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()

	dir := t.portDir(p.ID)
	ok, err := t.exists(dir)
	if err != nil {
		return fmt.Errorf("checking port %d: %w", p.ID, err)
	}
	if ok {
		cur, err := t.getPortLocked(p.ID)
		if err != nil {
			return err
		}
		if !cur.sameAddress(p) {
			if len(cur.Subsystems) > 0 {
				return fmt.Errorf("%w: port %d exists with address %s and exports %s; wanted %s (the address cannot change while subsystems are linked)",
					nvmeof.ErrBusy, p.ID, cur.addrString(), strings.Join(cur.Subsystems, ", "), p.addrString())
			}
			if err := t.checkAddressFree(p); err != nil {
				return err
			}
			if err := t.writePortAddr(p); err != nil {
				return err
			}
			klog.InfoS("Rewrote nvmet port address", "port", p.ID, "old", cur.addrString(), "new", p.addrString())
		} else {
			klog.V(4).InfoS("nvmet port already configured", "port", p.ID, "address", p.addrString())
		}
	} else {
		if err := t.checkAddressFree(p); err != nil {
			return err
		}
		if err := t.fs.Mkdir(dir); err != nil {
			return t.mkdirError("port "+strconv.Itoa(p.ID), dir, err)
		}
		if err := t.writePortAddr(p); err != nil {
			if rerr := t.fs.Rmdir(dir); rerr != nil {
				klog.ErrorS(rerr, "Cannot remove half-configured nvmet port", "port", p.ID)
			}
			return err
		}
		klog.InfoS("Created nvmet port", "port", p.ID, "address", p.addrString())
	}
	for _, nqn := range p.Subsystems {
		if err := t.linkLocked(p.ID, nqn); err != nil {
			return err
		}
	}
	return nil
}

func (t *Target) writePortAddr(p Port) error {
	dir := t.portDir(p.ID)
	for _, a := range [][2]string{
		{"addr_trtype", p.Transport},
		{"addr_adrfam", p.AdrFam},
		{"addr_traddr", p.TrAddr},
		{"addr_trsvcid", p.TrSvcID},
	} {
		if err := t.write(filepath.Join(dir, a[0]), a[1]); err != nil {
			return fmt.Errorf("configuring port %d: %w", p.ID, err)
		}
	}
	return nil
}

// checkAddressFree refuses an address already configured on another port.
func (t *Target) checkAddressFree(p Port) error {
	ids, err := t.numericNames(t.portsDir())
	if err != nil {
		return err
	}
	for _, id := range ids {
		if id == p.ID {
			continue
		}
		q, err := t.getPortLocked(id)
		if errors.Is(err, nvmeof.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if q.sameAddress(p) {
			return fmt.Errorf("%w: address %s is already configured on port %d (wanted for port %d)",
				nvmeof.ErrBusy, p.addrString(), id, p.ID)
		}
	}
	return nil
}

func (t *Target) mkdirError(what, dir string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		if aerr := t.Available(); aerr != nil {
			return fmt.Errorf("creating %s: %w", what, aerr)
		}
	}
	return fmt.Errorf("creating %s (mkdir %s): %w", what, dir, err)
}

// RemovePort unlinks every subsystem from port id and removes it. A missing
// port is not an error. Unlinking drops the connections through the port.
func (t *Target) RemovePort(id int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.removePortLocked(id)
}

func (t *Target) removePortLocked(id int) error {
	dir := t.portDir(id)
	ok, err := t.exists(dir)
	if err != nil || !ok {
		return err
	}
	subs, err := t.names(filepath.Join(dir, "subsystems"))
	if err != nil {
		return err
	}
	for _, nqn := range subs {
		if err := t.unlinkLocked(id, nqn); err != nil {
			return err
		}
	}
	if err := t.fs.Rmdir(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("removing port %d (%s): %w", id, dir, err)
	}
	klog.InfoS("Removed nvmet port", "port", id)
	return nil
}

// ListPorts returns every port, ordered by ID.
func (t *Target) ListPorts() ([]Port, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ids, err := t.numericNames(t.portsDir())
	if err != nil {
		return nil, err
	}
	return nvmeof.ReadExisting(ids, t.getPortLocked)
}

// GetPort returns port id, or nvmeof.ErrNotFound.
func (t *Target) GetPort(id int) (Port, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.getPortLocked(id)
}

func (t *Target) getPortLocked(id int) (Port, error) {
	dir := t.portDir(id)
	ok, err := t.exists(dir)
	if err != nil {
		return Port{}, fmt.Errorf("checking port %d: %w", id, err)
	}
	if !ok {
		return Port{}, fmt.Errorf("%w: nvmet port %d (%s)", nvmeof.ErrNotFound, id, dir)
	}
	p := Port{ID: id}
	for _, a := range []struct {
		file string
		dst  *string
	}{
		{"addr_trtype", &p.Transport}, {"addr_adrfam", &p.AdrFam},
		{"addr_traddr", &p.TrAddr}, {"addr_trsvcid", &p.TrSvcID},
	} {
		v, err := t.read(filepath.Join(dir, a.file))
		if err != nil {
			return Port{}, err
		}
		*a.dst = v
	}
	subs, err := t.names(filepath.Join(dir, "subsystems"))
	if err != nil {
		return Port{}, err
	}
	p.Subsystems = subs
	return p, nil
}

// portsOf returns the IDs of the ports exporting nqn.
func (t *Target) portsOf(nqn string) ([]int, error) {
	ids, err := t.numericNames(t.portsDir())
	if err != nil {
		return nil, err
	}
	var out []int
	for _, id := range ids {
		ok, err := t.exists(filepath.Join(t.portDir(id), "subsystems", nqn))
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, id)
		}
	}
	return out, nil
}

// LinkSubsystem exports subsystem nqn on port portID (symlink
// ports/<id>/subsystems/<nqn> -> subsystems/<nqn>). Idempotent. The first
// link enables the port, which is when the kernel loads the transport and
// binds the address.
func (t *Target) LinkSubsystem(portID int, nqn string) error {
	if err := validateSubsysNQN(nqn); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.linkLocked(portID, nqn)
}

func (t *Target) linkLocked(portID int, nqn string) error {
	p, err := t.getPortLocked(portID)
	if err != nil {
		return err
	}
	if err := t.requireSubsystem(nqn); err != nil {
		return err
	}
	link := filepath.Join(t.portDir(portID), "subsystems", nqn)
	if ok, err := t.exists(link); err != nil {
		return err
	} else if ok {
		klog.V(4).InfoS("Subsystem already exported on nvmet port", "nqn", nqn, "port", portID)
		return nil
	}
	if err := t.fs.Symlink(t.subsysDir(nqn), link); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return fmt.Errorf("exporting %s on port %d (%s): %w (is nvmet-%s loaded? is the address in use or not local?)",
			nqn, portID, p.addrString(), err, p.Transport)
	}
	klog.InfoS("Exported subsystem on nvmet port", "nqn", nqn, "port", portID, "address", p.addrString())
	return nil
}

// UnlinkSubsystem stops exporting nqn on port portID; the kernel drops the
// connections of that subsystem through that port. Idempotent.
func (t *Target) UnlinkSubsystem(portID int, nqn string) error {
	if err := validateSubsysNQN(nqn); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.unlinkLocked(portID, nqn)
}

func (t *Target) unlinkLocked(portID int, nqn string) error {
	link := filepath.Join(t.portDir(portID), "subsystems", nqn)
	if err := t.fs.Remove(link); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("unexporting %s from port %d (%s): %w", nqn, portID, link, err)
	}
	klog.InfoS("Unexported subsystem from nvmet port", "nqn", nqn, "port", portID)
	return nil
}

// CutSessions drops every live connection to subsystem nqn by unlinking it
// from each port that exports it and linking it again. Revoking a host
// (RevokeHost) does not end its existing connection; calling CutSessions
// afterwards does, and the host's reconnect attempts are then refused.
// Connections of other subsystems on the same ports are not affected.
func (t *Target) CutSessions(nqn string) error {
	if err := validateSubsysNQN(nqn); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.requireSubsystem(nqn); err != nil {
		return err
	}
	ports, err := t.portsOf(nqn)
	if err != nil {
		return err
	}
	var errs []error
	var unlinked []int
	for _, id := range ports {
		if err := t.unlinkLocked(id, nqn); err != nil {
			errs = append(errs, err)
			continue
		}
		unlinked = append(unlinked, id)
	}
	for _, id := range unlinked {
		if err := t.linkLocked(id, nqn); err != nil {
			errs = append(errs, fmt.Errorf("subsystem %s is NOT exported on port %d any more: %w", nqn, id, err))
		}
	}
	if len(errs) == 0 {
		klog.InfoS("Cut NVMe-oF sessions of subsystem", "nqn", nqn, "ports", ports)
	}
	return errors.Join(errs...)
}
