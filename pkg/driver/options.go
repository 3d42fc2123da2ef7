package driver

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Mode selects which CSI services one process serves.
type Mode string

const (
	// ControllerMode serves Identity and Controller (the Deployment with the
	// provisioner, attacher and resizer sidecars).
	ControllerMode Mode = "controller"
	// NodeMode serves Identity and Node (the DaemonSet on compute nodes).
	NodeMode Mode = "node"
	// AllMode serves everything (csi-sanity, single-machine setups).
	AllMode Mode = "all"
)

func (m Mode) String() string { return string(m) }

// Set implements flag.Value.
func (m *Mode) Set(s string) error {
	switch Mode(s) {
	case ControllerMode, NodeMode, AllMode:
		*m = Mode(s)
		return nil
	}
	return fmt.Errorf("mode %q: want controller, node or all", s)
}

func (m Mode) hasController() bool { return m == ControllerMode || m == AllMode }
func (m Mode) hasNode() bool       { return m == NodeMode || m == AllMode }

// Options configure the driver. cmd/nvmirror-csi fills them from flags.
type Options struct {
	// Mode is which services to serve.
	Mode Mode
	// Endpoint is the CSI socket, "unix:///csi/csi.sock" or a plain path.
	Endpoint string

	// ProvisionerAddress is the provisioner's gRPC address (host:port).
	// Every mode needs it: the controller for the volume lifecycle, the
	// node for GetVolume at stage time and for events.
	ProvisionerAddress string
	// ProvisionerCertFile and ProvisionerKeyFile are this plugin's client
	// certificate, its identity towards the provisioner: Subject O
	// "controller" (controller mode), "node" with CN the Kubernetes node
	// name (node mode), both for mode all. Re-read when they change.
	ProvisionerCertFile, ProvisionerKeyFile string
	// ProvisionerTokenFile, when set, holds a bearer token sent to the
	// provisioner (one started with --token-file requires it).
	ProvisionerTokenFile string
	// ProvisionerCAFile verifies the provisioner's TLS certificate (empty:
	// the system roots).
	ProvisionerCAFile string
	// ProvisionerServerName is the name expected in the provisioner's
	// certificate when it is not the host of ProvisionerAddress (e.g. a
	// certificate issued for the Service name, dialled by IP).
	ProvisionerServerName string

	// NodeName is the Kubernetes node name (node mode); the first half of
	// the node ID.
	NodeName string
	// HostRoot is where the host's /etc/nvme, /dev, /proc and /sys are
	// seen ("/" in a privileged pod with host mounts; a temporary tree in
	// tests).
	HostRoot string
	// StateDir keeps one JSON file per staged volume, so NodeUnstage and
	// the healer know what is staged after a plugin restart. It must be on
	// the host (hostPath), not in the container.
	StateDir string
	// MaxVolumesPerNode is reported by NodeGetInfo (0 = no limit). Each
	// volume takes an md minor and up to four NVMe controllers; the
	// default 100 keeps a node far from both limits.
	MaxVolumesPerNode int64
	// CtrlLossTmo (seconds) is how long the kernel keeps reconnecting a
	// lost replica before deleting its controller. 300 s covers agent
	// restarts, network blips and a quick storage-node reboot, which then
	// come back through the kernel alone (every ReconnectDelay) and rejoin
	// md with a bitmap re-add. A replica away longer loses its controller;
	// the healer reconnects it (or replaces it after maxReplicaDownTime).
	// Longer values only keep dead controllers around; -1 (forever) would
	// leak a controller per replaced replica if the healer missed one.
	CtrlLossTmo int
	// ReconnectDelay (seconds) between the kernel's reconnect attempts.
	ReconnectDelay int
	// FastIOFailTmo (seconds) after which I/O queued on a reconnecting
	// controller fails, so md ejects that leg instead of freezing the whole
	// mirror (md's failfast is ignored by the NVMe multipath head). 0 fails
	// it at once: writes stall tens of milliseconds at a replica's loss
	// instead of up to this long, but a blip shorter than it, which the
	// default rides out, costs a failed leg and a bitmap resync.
	FastIOFailTmo int
	// KeepAliveTmo (seconds): how fast a silent target is noticed.
	KeepAliveTmo int
	// DeviceWaitTimeout bounds NodeStage's wait for replicas' block devices;
	// replicas that do not show up by then are left to the healer and the
	// volume is staged degraded.
	DeviceWaitTimeout time.Duration
	// BitmapChunkBytes is md's write-intent bitmap chunk for new arrays
	// (DefaultBitmapChunkBytes; 0 = mdadm's own default, 64 MiB). Smaller
	// chunks make re-adds copy less.
	BitmapChunkBytes int64
}

// DefaultOptions returns the options with every default filled.
func DefaultOptions() Options {
	return Options{
		Mode:              AllMode,
		Endpoint:          "unix:///csi/csi.sock",
		NodeName:          os.Getenv("NODE_NAME"),
		HostRoot:          "/",
		StateDir:          "/var/lib/nvmirror/node",
		MaxVolumesPerNode: 100,
		CtrlLossTmo:       DefaultCtrlLossTmo,
		ReconnectDelay:    DefaultReconnectDelay,
		FastIOFailTmo:     DefaultFastIOFailTmo,
		KeepAliveTmo:      DefaultKeepAliveTmo,
		DeviceWaitTimeout: DefaultDeviceWaitTimeout,
		BitmapChunkBytes:  DefaultBitmapChunkBytes,
	}
}

// DefaultBitmapChunkBytes is the write-intent bitmap chunk of new arrays.
// A replica back from an outage is resynced chunk by chunk, so mdadm's
// default of 64 MiB makes a short outage of a small volume cost a copy of
// most of it. 4 MiB keeps re-adds small; its bitmap (one bit a chunk, 32 KiB
// for 1 TiB) fits in layout.MetadataReserve for volumes up to 128 TiB, and
// a chunk's bit is set once per burst of writes to it, so the extra bitmap
// writes stay few.
const DefaultBitmapChunkBytes = 4 << 20

// AddFlags registers the flags on fs with o's values as defaults. Flags that
// only matter in one mode say so; Validate checks them only in that mode.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.Var(&o.Mode, "mode", "services to serve: controller, node or all")
	fs.StringVar(&o.Endpoint, "endpoint", o.Endpoint, "CSI endpoint (unix socket)")
	fs.StringVar(&o.ProvisionerAddress, "provisioner-address", o.ProvisionerAddress, "provisioner gRPC address host:port")
	fs.StringVar(&o.ProvisionerCertFile, "provisioner-cert-file", o.ProvisionerCertFile, "client certificate (PEM) identifying this plugin to the provisioner (Subject O=controller and/or node, CN=the node name)")
	fs.StringVar(&o.ProvisionerKeyFile, "provisioner-key-file", o.ProvisionerKeyFile, "the key of --provisioner-cert-file (PEM)")
	fs.StringVar(&o.ProvisionerTokenFile, "provisioner-token-file", o.ProvisionerTokenFile, "optional: file holding the provisioner's bearer token")
	fs.StringVar(&o.ProvisionerCAFile, "provisioner-ca-file", o.ProvisionerCAFile, "CA certificate (PEM) verifying the provisioner (default: system roots)")
	fs.StringVar(&o.ProvisionerServerName, "provisioner-server-name", o.ProvisionerServerName, "name expected in the provisioner's certificate (default: the host of --provisioner-address)")
	o.addNodeFlags(fs)
}

func (o *Options) addNodeFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.NodeName, "node-name", o.NodeName, "[node] Kubernetes node name (default $NODE_NAME)")
	fs.StringVar(&o.HostRoot, "host-root", o.HostRoot, "[node] where the host's /etc/nvme, /dev, /proc and /sys are visible")
	fs.StringVar(&o.StateDir, "state-dir", o.StateDir, "[node] directory (on the host) recording staged volumes")
	fs.Int64Var(&o.MaxVolumesPerNode, "max-volumes-per-node", o.MaxVolumesPerNode, "[node] volumes this node accepts (0 = no limit)")
	fs.IntVar(&o.CtrlLossTmo, "ctrl-loss-tmo", o.CtrlLossTmo, "[node] seconds the kernel reconnects a lost replica before deleting its controller (-1 = forever)")
	fs.IntVar(&o.ReconnectDelay, "reconnect-delay", o.ReconnectDelay, "[node] seconds between reconnect attempts")
	fs.IntVar(&o.FastIOFailTmo, "fast-io-fail-tmo", o.FastIOFailTmo, "[node] seconds before I/O to a reconnecting replica fails so md ejects the leg (0 = at once)")
	fs.IntVar(&o.KeepAliveTmo, "keep-alive-tmo", o.KeepAliveTmo, "[node] NVMe keep-alive timeout in seconds")
	fs.DurationVar(&o.DeviceWaitTimeout, "device-wait-timeout", o.DeviceWaitTimeout, "[node] how long NodeStage waits for replica block devices")
	fs.Int64Var(&o.BitmapChunkBytes, "bitmap-chunk-bytes", o.BitmapChunkBytes, "[node] md write-intent bitmap chunk for new arrays in bytes, a power of two (0 = mdadm's 64 MiB)")
}

// Validate checks the options for the selected mode and returns every
// problem at once.
func (o *Options) Validate() error {
	var errs []error
	if err := o.Mode.Set(string(o.Mode)); err != nil {
		errs = append(errs, err)
	}
	if _, err := socketPath(o.Endpoint); err != nil {
		errs = append(errs, err)
	}
	if o.ProvisionerAddress == "" {
		errs = append(errs, errors.New("--provisioner-address is required"))
	} else if _, _, err := net.SplitHostPort(o.ProvisionerAddress); err != nil {
		errs = append(errs, fmt.Errorf("--provisioner-address %q: want host:port", o.ProvisionerAddress))
	}
	if o.ProvisionerCertFile == "" || o.ProvisionerKeyFile == "" {
		errs = append(errs, errors.New("--provisioner-cert-file and --provisioner-key-file are required (the provisioner identifies its callers by their client certificates)"))
	}
	if o.Mode.hasNode() {
		if o.NodeName == "" || strings.Contains(o.NodeName, nodeIDSeparator) {
			errs = append(errs, fmt.Errorf("--node-name %q: required (or $NODE_NAME) and must not contain %q", o.NodeName, nodeIDSeparator))
		}
		if !filepath.IsAbs(o.HostRoot) {
			errs = append(errs, fmt.Errorf("--host-root %q: must be absolute", o.HostRoot))
		}
		if !filepath.IsAbs(o.StateDir) {
			errs = append(errs, fmt.Errorf("--state-dir %q: must be absolute", o.StateDir))
		}
		if o.MaxVolumesPerNode < 0 {
			errs = append(errs, fmt.Errorf("--max-volumes-per-node %d: must be >= 0", o.MaxVolumesPerNode))
		}
		if o.CtrlLossTmo < -1 || o.CtrlLossTmo == 0 {
			errs = append(errs, fmt.Errorf("--ctrl-loss-tmo %d: must be -1 or positive", o.CtrlLossTmo))
		}
		if o.ReconnectDelay <= 0 {
			errs = append(errs, fmt.Errorf("--reconnect-delay %d: must be positive", o.ReconnectDelay))
		}
		if o.FastIOFailTmo < 0 {
			// The kernel's off (-1) would let one lost replica freeze the
			// mirror. 0 is not off: it fails the queued I/O as soon as the
			// connection is lost, so md drops the leg at once (the shortest
			// stall, and a resync after every blip).
			errs = append(errs, fmt.Errorf("--fast-io-fail-tmo %d: must be 0 or more", o.FastIOFailTmo))
		}
		if o.CtrlLossTmo > 0 && o.FastIOFailTmo >= o.CtrlLossTmo {
			errs = append(errs, fmt.Errorf("--fast-io-fail-tmo %d must be below --ctrl-loss-tmo %d", o.FastIOFailTmo, o.CtrlLossTmo))
		}
		if o.KeepAliveTmo <= 0 {
			errs = append(errs, fmt.Errorf("--keep-alive-tmo %d: must be positive", o.KeepAliveTmo))
		}
		if o.DeviceWaitTimeout <= 0 {
			errs = append(errs, fmt.Errorf("--device-wait-timeout %s: must be positive", o.DeviceWaitTimeout))
		}
		if c := o.BitmapChunkBytes; c != 0 && (c < 4096 || c&(c-1) != 0) {
			errs = append(errs, fmt.Errorf("--bitmap-chunk-bytes %d: must be 0 or a power of two >= 4096", c))
		}
	}
	return errors.Join(errs...)
}

// socketPath returns the unix socket path of a CSI endpoint.
func socketPath(endpoint string) (string, error) {
	p := endpoint
	if rest, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		p = rest
	} else if strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("--endpoint %q: only unix sockets are supported", endpoint)
	}
	if p == "" || !filepath.IsAbs(p) {
		return "", fmt.Errorf("--endpoint %q: want unix:///absolute/path", endpoint)
	}
	return p, nil
}
