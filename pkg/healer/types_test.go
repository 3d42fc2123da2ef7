package healer

import (
	"testing"
	"time"
)

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if c.Interval != 30*time.Second || c.HealTimeUnit != time.Minute ||
		c.MaxConcurrentReplacements < 1 || !c.FailGoneMembers || c.RetryBase <= 0 || c.RetryMax < c.RetryBase || c.NVMePollInterval <= 0 {
		t.Fatalf("%+v", c)
	}
}
