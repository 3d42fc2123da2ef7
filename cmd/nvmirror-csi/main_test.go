package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

func TestProvisionerClientNeedsToken(t *testing.T) {
	_, _, err := newProvisionerClient(driver.Options{ProvisionerAddress: "prov:9500", ProvisionerTokenFile: "/nonexistent/token"})
	if err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("missing token file: %v", err)
	}
}

// With nothing listening, the client still builds (dialling is lazy) and
// every call reports the provisioner unavailable.
func TestProvisionerClientUnreachableIsUnavailable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // a port nothing listens on
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, conn, err := newProvisionerClient(driver.Options{ProvisionerAddress: addr, ProvisionerTokenFile: token})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Ping(ctx); !errors.Is(err, volume.ErrUnavailable) {
		t.Fatalf("Ping: %v, want ErrUnavailable", err)
	}
	if _, err := p.GetVolume(ctx, "v"); !errors.Is(err, volume.ErrUnavailable) {
		t.Fatalf("GetVolume: %v, want ErrUnavailable", err)
	}
}
