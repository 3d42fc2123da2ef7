package nvmet

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

// Teardown removes every subsystem whose NQN starts with prefix, the ports
// that exported them and export nothing else afterwards, and every host
// entry no subsystem references, with its DH-HMAC-CHAP secrets if any. It
// goes on after errors and returns them joined. prefix must not be empty
// (that would remove everything).
func (t *Target) Teardown(prefix string) error {
	if prefix == "" {
		return fmt.Errorf("%w: empty NQN prefix would tear down every subsystem", nvmeof.ErrInvalidArgument)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	subs, err := t.names(t.subsystemsDir())
	if err != nil {
		return err
	}
	var errs []error
	affected := map[int]bool{}
	for _, nqn := range subs {
		if !strings.HasPrefix(nqn, prefix) {
			continue
		}
		ports, err := t.portsOf(nqn)
		if err != nil {
			errs = append(errs, err)
		}
		for _, p := range ports {
			affected[p] = true
		}
		if err := t.removeSubsystemLocked(nqn); err != nil {
			errs = append(errs, err)
		}
	}
	ids := make([]int, 0, len(affected))
	for id := range affected {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		left, err := t.names(filepath.Join(t.portDir(id), "subsystems"))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(left) > 0 {
			continue
		}
		if err := t.removePortLocked(id); err != nil {
			errs = append(errs, err)
		}
	}
	hosts, err := t.names(t.hostsDir())
	if err != nil {
		errs = append(errs, err)
	}
	for _, h := range hosts {
		if err := t.removeOrphanHost(h, false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
