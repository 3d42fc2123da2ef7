package main

import (
	"context"
	"errors"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/driver"
)

// TestPlaceholderProvisionerIsUnavailable keeps the placeholder honest: it
// must never look like a working provisioner.
func TestPlaceholderProvisionerIsUnavailable(t *testing.T) {
	p := newProvisionerClient(driver.Options{ProvisionerAddress: "prov:9500"})
	ctx := context.Background()
	if err := p.Ping(ctx); !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("Ping: %v, want ErrUnavailable", err)
	}
	if _, err := p.GetVolume(ctx, "v"); !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("GetVolume: %v, want ErrUnavailable", err)
	}
}
