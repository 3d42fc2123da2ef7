package healer

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	c := testConfig()
	for attempts, want := range map[int]time.Duration{1: 30 * time.Second, 2: time.Minute, 3: 2 * time.Minute, 6: 10 * time.Minute, 50: 10 * time.Minute} {
		if got := backoff(c, attempts); got != want {
			t.Errorf("backoff(%d) = %s, want %s", attempts, got, want)
		}
	}
}
