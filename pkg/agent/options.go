package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
)

// Options configure the agent. cmd/nvmirror-target fills them from flags
// (see docs/nvmirror-target.md); every field is documented there too.
type Options struct {
	// PoolDir is the directory holding the replicas' backing files.
	PoolDir string
	// StateFile persists the replica records; default PoolDir/state.json.
	// It must be on the pool's filesystem so that both are lost or kept
	// together.
	StateFile string
	// NvmetRoot is nvmet's configfs directory ("" = /sys/kernel/config/nvmet).
	NvmetRoot string
	// NQNPrefix is prepended to replica IDs to name subsystems. The agent
	// owns every subsystem under it; two agents sharing one kernel need
	// different prefixes.
	NQNPrefix string
	// Ports are the nvmet ports (tcp listeners) every replica is exported
	// on. Two agents sharing one kernel need different port IDs.
	Ports []nvmet.Port
	// BufferedIO exports backing files with buffered I/O (forced on when
	// the pool is on tmpfs, which has no O_DIRECT).
	BufferedIO bool

	// Failure-domain labels reported by NodeInfo.
	NodeName, Zone, Rack string

	// Listen is the gRPC listen address (host:port).
	Listen string
	// TLSCertFile and TLSKeyFile are the server certificate (PEM).
	TLSCertFile, TLSKeyFile string
	// TLSClientCAFile is the CA bundle the caller's client certificate must
	// chain to (only the provisioner's role is served).
	TLSClientCAFile string
	// TokenFile, when set, holds a bearer token callers must also send.
	TokenFile string
	// ShutdownTimeout bounds the graceful stop on SIGTERM.
	ShutdownTimeout time.Duration
}

// ParseNvmeAddresses turns "ADDR:PORT" entries (IPv6 as "[ADDR]:PORT")
// into ports numbered from firstID.
func ParseNvmeAddresses(addrs []string, firstID int) ([]nvmet.Port, error) {
	var out []nvmet.Port
	for i, a := range addrs {
		ap, err := netip.ParseAddrPort(strings.TrimSpace(a))
		if err != nil {
			return nil, fmt.Errorf("nvme address %q: want ADDR:PORT (IPv6 as [ADDR]:PORT): %w", a, err)
		}
		fam := "ipv4"
		if ap.Addr().Is6() && !ap.Addr().Is4In6() {
			fam = "ipv6"
		}
		out = append(out, nvmet.Port{
			ID:        firstID + i,
			Transport: "tcp",
			AdrFam:    fam,
			TrAddr:    ap.Addr().Unmap().String(),
			TrSvcID:   strconv.Itoa(int(ap.Port())),
		})
	}
	return out, nil
}

// Validate checks everything the agent needs to run, and fills defaults.
func (o *Options) Validate() error {
	var errs []error
	if o.PoolDir == "" || !filepath.IsAbs(o.PoolDir) {
		errs = append(errs, fmt.Errorf("--pool-dir must be an absolute path, got %q", o.PoolDir))
	}
	if o.StateFile == "" && o.PoolDir != "" {
		o.StateFile = filepath.Join(o.PoolDir, StateFileName)
	}
	if o.Listen == "" {
		errs = append(errs, errors.New("--listen is required"))
	}
	if o.TLSCertFile == "" || o.TLSKeyFile == "" {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are required (the API is TLS only)"))
	}
	if o.TLSClientCAFile == "" {
		errs = append(errs, errors.New("--tls-client-ca-file is required (the provisioner is identified by its client certificate)"))
	}
	if o.NodeName == "" {
		errs = append(errs, errors.New("--node-name is required"))
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 30 * time.Second
	}
	if err := o.validateService(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// validateService checks the options Service itself depends on.
func (o *Options) validateService() error {
	if o.NQNPrefix == "" {
		o.NQNPrefix = DefaultNQNPrefix
	}
	var errs []error
	// The longest replica ID must still give a valid NQN.
	if err := nvmeof.ValidateNQN(o.NQNPrefix + strings.Repeat("a", 63)); err != nil {
		errs = append(errs, fmt.Errorf("--nqn-prefix %q: %w", o.NQNPrefix, err))
	}
	if !strings.HasSuffix(o.NQNPrefix, ":") {
		errs = append(errs, fmt.Errorf("--nqn-prefix %q must end with ':' so that no other agent's NQN can start with it by accident", o.NQNPrefix))
	}
	if len(o.Ports) == 0 {
		errs = append(errs, errors.New("at least one --nvme-address is required"))
	}
	ids := map[int]bool{}
	for _, p := range o.Ports {
		if ids[p.ID] {
			errs = append(errs, fmt.Errorf("nvmet port ID %d used twice", p.ID))
		}
		ids[p.ID] = true
	}
	return errors.Join(errs...)
}
