// Package inflight is the set of objects (volume or replica IDs) with an
// operation running. Every API of nvmirror that changes a volume takes it:
// a CO or sidecar retries a call whose deadline passed while the first
// attempt still runs, and a second NodeStage racing the first on the same
// md array and mount, or a second publish racing the first on the same
// agents, would at best wait for the same result and at worst do harm. The
// second caller gets Aborted (or the package's in-progress error) and retries
// later; nothing waits on a lock.
package inflight

import "sync"

// Set is a mutex-guarded set of keys; the zero value is ready to use.
type Set struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

// Insert claims key and reports whether it was free. A caller that got true
// must Delete the key when done (defer).
func (s *Set) Insert(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.keys[key]; taken {
		return false
	}
	if s.keys == nil {
		s.keys = map[string]struct{}{}
	}
	s.keys[key] = struct{}{}
	return true
}

// Delete releases key.
func (s *Set) Delete(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, key)
}
