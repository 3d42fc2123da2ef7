package inflight

import (
	"sync"
	"testing"
)

func TestInFlight(t *testing.T) {
	f := &Set{}
	if !f.Insert("vol-1") {
		t.Fatal("first Insert of vol-1 refused")
	}
	if f.Insert("vol-1") {
		t.Fatal("second Insert of vol-1 accepted while held")
	}
	if !f.Insert("vol-2") {
		t.Fatal("Insert of another key refused")
	}
	f.Delete("vol-1")
	if !f.Insert("vol-1") {
		t.Fatal("Insert after Delete refused")
	}
	f.Delete("never-inserted") // must not panic
}

// TestInFlightConcurrent checks that exactly one of many concurrent callers
// wins a key (run with -race).
func TestInFlightConcurrent(t *testing.T) {
	f := &Set{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f.Insert("k") {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d callers won the key, want 1", wins)
	}
}
