package driver

import "sync"

// inFlight is the set of objects (volume IDs) with an operation running.
// The CO retries calls whose deadline passed while the first attempt still
// runs; a second NodeStage racing the first on the same md array and mount
// would do harm, so the second gets Aborted and the CO retries later.
type inFlight struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

func newInFlight() *inFlight { return &inFlight{keys: map[string]struct{}{}} }

// Insert claims key and reports whether it was free. A caller that got true
// must Delete the key when done (defer).
func (f *inFlight) Insert(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, taken := f.keys[key]; taken {
		return false
	}
	f.keys[key] = struct{}{}
	return true
}

// Delete releases key.
func (f *inFlight) Delete(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.keys, key)
}
