// Package storageclass is the StorageClass vocabulary: it parses and validates the StorageClass parameters of an
// nvmirror volume into a typed Parameters value.
//
// Names follow the reference product where the concept is the same
// (numReplicas, maxReplicaDownTime, sameRackAllowed, provisioningType,
// csi.storage.k8s.io/fstype), so a StorageClass written for it reads the same
// here. Unknown keys are rejected by name rather than ignored: a typo such as
// "numReplica: 3" must not silently give a single-replica volume.
package storageclass

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// ErrInvalidArgument is wrapped by every validation error, so the service can
// map it to codes.InvalidArgument with errors.Is.
var ErrInvalidArgument = errors.New("invalid argument")

// DriverName is the CSI plugin name: a StorageClass's provisioner, and the
// driver of every PV of an nvmirror volume.
const DriverName = "csi.nvmirror.io"

// Parameter keys accepted in StorageClass.parameters.
const (
	KeyNumReplicas        = "numReplicas"
	KeyMaxReplicaDownTime = "maxReplicaDownTime"
	KeySameRackAllowed    = "sameRackAllowed"
	KeyProvisioningType   = "provisioningType"
	KeyFSType             = "csi.storage.k8s.io/fstype"
	KeyZones              = "zones"
	KeyRacks              = "racks"
	KeyStorageNodes       = "storageNodes"
	KeyAuthentication     = "authentication"
	KeyRebuildBandwidth   = "rebuildBandwidthLimit"

	// Injected by the external-provisioner sidecar when it runs with
	// --extra-create-metadata. They describe the claim, not the volume's
	// configuration, so they are kept as metadata and never compared.
	KeyPVName       = "csi.storage.k8s.io/pv/name"
	KeyPVCName      = "csi.storage.k8s.io/pvc/name"
	KeyPVCNamespace = "csi.storage.k8s.io/pvc/namespace"
)

// ProvisioningType says how a replica's backing storage is allocated.
type ProvisioningType string

const (
	// Thin replicas are sparse: space is taken as data is written.
	Thin ProvisioningType = "thin"
	// Thick replicas are fully allocated when created.
	Thick ProvisioningType = "thick"
)

// Authentication is how an NVMe-oF connection between the volume's host and
// a storage node is authenticated (NVMe in-band authentication,
// DH-HMAC-CHAP), on top of the allowed-hosts list of host NQNs.
type Authentication string

const (
	// AuthNone: the storage node admits the published host NQN without
	// proof. A host NQN is a string anyone on the storage network can
	// claim, so this trusts that network.
	AuthNone Authentication = "none"
	// AuthHost: the host proves it holds a secret shared with the storage
	// node (one-way DH-HMAC-CHAP); a stranger claiming the host's NQN is
	// refused by the kernel target.
	AuthHost Authentication = "host"
	// AuthBidirectional: AuthHost, and the storage node also proves its
	// secret to the host, which refuses a target impersonating it.
	AuthBidirectional Authentication = "bidirectional"
)

// Filesystem types nvmirror formats.
const (
	FSExt4 = "ext4"
	FSXFS  = "xfs"
)

// Defaults and bounds, documented in docs and the StorageClass examples.
const (
	// DefaultNumReplicas is 2, not the reference product's 1: a mirror with
	// one leg survives nothing, and the point of nvmirror is to survive the
	// loss of a storage node. Two replicas survive one failure at twice the
	// capacity and need only two storage nodes in distinct racks; a default
	// of 3 would make provisioning fail on the small clusters people start
	// with. Clusters that want to survive two failures ask for 3.
	DefaultNumReplicas = 2
	MinNumReplicas     = 1
	MaxNumReplicas     = 3

	// DefaultMaxReplicaDownTime is 60 minutes. A storage node reboot or a
	// kernel upgrade takes minutes and comes back with a cheap bitmap re-add;
	// replacing the replica instead costs a full resync of the volume and
	// network bandwidth for every volume on that node at once. An hour
	// covers routine maintenance while bounding how long a volume runs
	// with one leg short.
	DefaultMaxReplicaDownTime = 60
	// MaxMaxReplicaDownTime is 30 days in minutes. The spec asks for at least
	// a week (10080); beyond a month "wait for the node" is not a policy
	// but a forgotten volume, and 0 is the way to disable replacement.
	MaxMaxReplicaDownTime = 30 * 24 * 60

	// DefaultProvisioningType is thin: the agent's pool is sparse files, so
	// thin is the natural form and creation does not write the full size.
	// Placement still never promises more than the pool holds unless the
	// operator sets an overcommit ratio (see package placement).
	DefaultProvisioningType = Thin

	DefaultFSType = FSExt4

	// DefaultAuthentication is none: NVMe in-band authentication needs
	// CONFIG_NVME_AUTH on every node and CONFIG_NVME_TARGET_AUTH on every
	// storage node (Linux 6.0+ built with them, e.g. Debian's 6.12
	// backports kernel, not Debian 12's stock 6.1), and a default that
	// fails to attach on common kernels would be an install trap. Clusters
	// whose kernels have it should set host or bidirectional.
	DefaultAuthentication = AuthNone

	// DefaultRebuildBandwidth is 0: no per-volume limit. md's own
	// defaults and the node's --max-rebuild-bandwidth apply; a limit is a
	// choice about the volume's neighbours, which the default cannot know.
	DefaultRebuildBandwidth = 0
	// MaxRebuildBandwidth (MiB/s) is far above any NVMe/TCP link today;
	// a larger number is a typo, not a policy.
	MaxRebuildBandwidth = 100000
)

// Parameters is the validated form of a StorageClass's parameters.
type Parameters struct {
	NumReplicas int `json:"numReplicas"`
	// MaxReplicaDownTimeMinutes is how long a replica may stay down before
	// the healer replaces it; 0 disables replacement.
	MaxReplicaDownTimeMinutes int              `json:"maxReplicaDownTime"`
	SameRackAllowed           bool             `json:"sameRackAllowed"`
	ProvisioningType          ProvisioningType `json:"provisioningType"`
	FSType                    string           `json:"fsType"`
	// Placement selectors: when non-empty, replicas go only to storage nodes
	// whose zone / rack / id is listed. Sorted and deduplicated.
	Zones        []string `json:"zones,omitempty"`
	Racks        []string `json:"racks,omitempty"`
	StorageNodes []string `json:"storageNodes,omitempty"`
	// Authentication of the NVMe-oF connections ("" in records written
	// before it existed, read as none).
	Authentication Authentication `json:"authentication,omitempty"`
	// RebuildBandwidthMiBps caps how fast md copies onto a replica that is
	// being brought up to date (re-add, replacement), in MiB/s; 0: no
	// per-volume cap.
	RebuildBandwidthMiBps int `json:"rebuildBandwidthLimit,omitempty"`

	// Metadata describes the claim (CSI-injected keys); not configuration.
	Metadata Metadata `json:"metadata"`
}

// Metadata holds the claim identity injected by the external-provisioner.
type Metadata struct {
	PVName       string `json:"pvName,omitempty"`
	PVCName      string `json:"pvcName,omitempty"`
	PVCNamespace string `json:"pvcNamespace,omitempty"`
}

// Defaults returns the parameters of a StorageClass that sets nothing.
func Defaults() Parameters {
	return Parameters{
		NumReplicas:               DefaultNumReplicas,
		MaxReplicaDownTimeMinutes: DefaultMaxReplicaDownTime,
		ProvisioningType:          DefaultProvisioningType,
		FSType:                    DefaultFSType,
		Authentication:            DefaultAuthentication,
	}
}

// Auth is the volume's authentication mode; records from before the
// parameter existed read as none.
func (p Parameters) Auth() Authentication {
	if p.Authentication == "" {
		return AuthNone
	}
	return p.Authentication
}

// mutableKeys are the parameters a VolumeAttributesClass may set at creation
// or change later (ControllerModifyVolume): the healing policy, and the
// replica count (the provisioner adds or deletes replicas to follow it).
// Placement, provisioning type, filesystem and authentication shape data
// and connections that already exist, which changing a record cannot
// change.
var mutableKeys = []string{KeyMaxReplicaDownTime, KeyRebuildBandwidth, KeyNumReplicas}

// IsMutable reports whether key may be changed after creation.
func IsMutable(key string) bool { return slices.Contains(mutableKeys, key) }

// MutableKeys returns the keys IsMutable accepts, for messages and docs.
func MutableKeys() []string { return slices.Clone(mutableKeys) }

// WithMutable returns p with the mutable parameters in changes applied.
// A key that is not mutable is ErrInvalidArgument naming it, and values are
// validated by the StorageClass rules (same messages); p is unchanged on
// error.
func (p Parameters) WithMutable(changes map[string]string) (Parameters, error) {
	for _, k := range slices.Sorted(maps.Keys(changes)) {
		if !IsMutable(k) {
			return p, fmt.Errorf("%w: parameter %q cannot be modified (mutable: %s)", ErrInvalidArgument, k, strings.Join(mutableKeys, ", "))
		}
	}
	parsed, err := Parse(changes)
	if err != nil {
		return p, err
	}
	if _, ok := changes[KeyMaxReplicaDownTime]; ok {
		p.MaxReplicaDownTimeMinutes = parsed.MaxReplicaDownTimeMinutes
	}
	if _, ok := changes[KeyRebuildBandwidth]; ok {
		p.RebuildBandwidthMiBps = parsed.RebuildBandwidthMiBps
	}
	if _, ok := changes[KeyNumReplicas]; ok {
		p.NumReplicas = parsed.NumReplicas
	}
	return p, nil
}

// Policy is what the node side acts on: the part of a volume's parameters
// the registry sends typed with every volume, so the CSI driver and the
// healer never parse StorageClass strings again.
type Policy struct {
	NumReplicas int
	// MaxReplicaDownTimeMinutes: how long a replica may stay away before
	// the healer replaces it; 0 disables replacement.
	MaxReplicaDownTimeMinutes int
	FSType                    string
	Authentication            Authentication
	// RebuildBandwidthMiBps: md's copy rate onto a replica being brought
	// up to date, at most; 0: no per-volume cap.
	RebuildBandwidthMiBps int
}

// Policy returns the node side's part of p.
func (p Parameters) Policy() Policy {
	return Policy{NumReplicas: p.NumReplicas, MaxReplicaDownTimeMinutes: p.MaxReplicaDownTimeMinutes,
		FSType: p.FSType, Authentication: p.Auth(), RebuildBandwidthMiBps: p.RebuildBandwidthMiBps}
}

// DefaultPolicy is the policy of a volume whose StorageClass sets nothing.
func DefaultPolicy() Policy { return Defaults().Policy() }

// Required reports whether a connection must authenticate: a volume of
// this mode is never connected without secrets.
func (a Authentication) Required() bool { return a == AuthHost || a == AuthBidirectional }

// selectorItem is what a zone, rack or storage node name may look like: a
// Kubernetes label value (which is where zones and racks come from).
var selectorItem = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)

// Parse validates a StorageClass's parameters. Every error wraps
// ErrInvalidArgument and names the parameter and the offending value.
// Keys are processed in sorted order so that, with several bad keys, the
// error is always about the same one.
func Parse(in map[string]string) (Parameters, error) {
	p := Defaults()
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := in[k]
		var err error
		switch k {
		case KeyNumReplicas:
			p.NumReplicas, err = parseInt(k, v, MinNumReplicas, MaxNumReplicas)
		case KeyMaxReplicaDownTime:
			p.MaxReplicaDownTimeMinutes, err = parseInt(k, v, 0, MaxMaxReplicaDownTime)
		case KeySameRackAllowed:
			p.SameRackAllowed, err = parseBool(k, v)
		case KeyProvisioningType:
			switch strings.ToLower(strings.TrimSpace(v)) {
			case string(Thin):
				p.ProvisioningType = Thin
			case string(Thick):
				p.ProvisioningType = Thick
			default:
				err = invalid(k, v, "must be thin or thick")
			}
		case KeyFSType:
			var fs string
			// The sidecar may pass an empty fstype: keep the default.
			if fs, err = ParseFSType(v); err == nil && fs != "" {
				p.FSType = fs
			}
		case KeyZones:
			p.Zones, err = parseList(k, v)
		case KeyRacks:
			p.Racks, err = parseList(k, v)
		case KeyStorageNodes:
			p.StorageNodes, err = parseList(k, v)
		case KeyAuthentication:
			switch a := Authentication(strings.ToLower(strings.TrimSpace(v))); a {
			case AuthNone, AuthHost, AuthBidirectional:
				p.Authentication = a
			default:
				err = invalid(k, v, "must be none, host or bidirectional")
			}
		case KeyRebuildBandwidth:
			p.RebuildBandwidthMiBps, err = parseInt(k, v, 0, MaxRebuildBandwidth)
		case KeyPVName:
			p.Metadata.PVName = v
		case KeyPVCName:
			p.Metadata.PVCName = v
		case KeyPVCNamespace:
			p.Metadata.PVCNamespace = v
		default:
			err = fmt.Errorf("%w: unknown parameter %q", ErrInvalidArgument, k)
		}
		if err != nil {
			return Parameters{}, err
		}
	}
	return p, nil
}

// Map renders p back to StorageClass form (without metadata), so a stored
// volume's parameters can be shown and re-parsed.
func (p Parameters) Map() map[string]string {
	m := map[string]string{
		KeyNumReplicas:        strconv.Itoa(p.NumReplicas),
		KeyMaxReplicaDownTime: strconv.Itoa(p.MaxReplicaDownTimeMinutes),
		KeySameRackAllowed:    strconv.FormatBool(p.SameRackAllowed),
		KeyProvisioningType:   string(p.ProvisioningType),
		KeyFSType:             p.FSType,
		KeyAuthentication:     string(p.Auth()),
		KeyRebuildBandwidth:   strconv.Itoa(p.RebuildBandwidthMiBps),
	}
	if len(p.Zones) > 0 {
		m[KeyZones] = strings.Join(p.Zones, ",")
	}
	if len(p.Racks) > 0 {
		m[KeyRacks] = strings.Join(p.Racks, ",")
	}
	if len(p.StorageNodes) > 0 {
		m[KeyStorageNodes] = strings.Join(p.StorageNodes, ",")
	}
	return m
}

// SameConfiguration reports whether p and o describe the same volume
// configuration, ignoring metadata. CreateVolume uses it to tell a retry
// (same name, same configuration) from a conflict (same name, different).
func (p Parameters) SameConfiguration(o Parameters) bool {
	return p.NumReplicas == o.NumReplicas &&
		p.MaxReplicaDownTimeMinutes == o.MaxReplicaDownTimeMinutes &&
		p.SameRackAllowed == o.SameRackAllowed &&
		p.ProvisioningType == o.ProvisioningType &&
		p.FSType == o.FSType &&
		p.Auth() == o.Auth() &&
		p.RebuildBandwidthMiBps == o.RebuildBandwidthMiBps &&
		equalStrings(p.Zones, o.Zones) &&
		equalStrings(p.Racks, o.Racks) &&
		equalStrings(p.StorageNodes, o.StorageNodes)
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// MaxVolumeNameLength bounds a volume's name (CSI CreateVolume's name: the
// PV's name in Kubernetes): 253 bytes, the longest Kubernetes object name.
// The registry indexes volumes by name, so it is a key there.
const MaxVolumeNameLength = 253

// volumeNamePattern: letters, digits, '.', '_' and '-', starting with a
// letter or digit: every name Kubernetes (pvc-<uid>) and csi-sanity give,
// and nothing that is a path, a control character or a separator.
var volumeNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// VolumeNameProblem says what is wrong with a volume name, or returns ""
// for a valid one: 1 to MaxVolumeNameLength bytes matching
// volumeNamePattern. The name itself is not repeated (it may be huge, or
// hold control characters).
func VolumeNameProblem(name string) string {
	switch {
	case name == "":
		return "required"
	case len(name) > MaxVolumeNameLength:
		return fmt.Sprintf("%d bytes, at most %d", len(name), MaxVolumeNameLength)
	case !volumeNamePattern.MatchString(name):
		return "only letters, digits, '.', '_' and '-', starting with a letter or digit"
	}
	return ""
}

// ValidateVolumeName is VolumeNameProblem as an error wrapping
// ErrInvalidArgument that names the parameter ("name").
func ValidateVolumeName(name string) error {
	if p := VolumeNameProblem(name); p != "" {
		return fmt.Errorf("%w: name: %s", ErrInvalidArgument, p)
	}
	return nil
}

// ParseFSType reads a csi.storage.k8s.io/fstype value: FSExt4 or FSXFS in
// any case and spacing, or "" for none (the default applies).
func ParseFSType(v string) (string, error) {
	switch fs := strings.ToLower(strings.TrimSpace(v)); fs {
	case "", FSExt4, FSXFS:
		return fs, nil
	default:
		return "", invalid(KeyFSType, v, "must be ext4 or xfs")
	}
}

func invalid(key, value, why string) error {
	return fmt.Errorf("%w: parameter %s=%q: %s", ErrInvalidArgument, key, value, why)
}

func parseInt(key, v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, invalid(key, v, fmt.Sprintf("must be an integer from %d to %d", lo, hi))
	}
	if n < lo || n > hi {
		return 0, invalid(key, v, fmt.Sprintf("must be from %d to %d", lo, hi))
	}
	return n, nil
}

// parseBool accepts only true/false (any case): strconv.ParseBool's "1",
// "t" and "F" are not what a StorageClass author writes, and accepting them
// would make two spellings of one class compare different.
func parseBool(key, v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, invalid(key, v, "must be true or false")
}

// parseList splits a comma list, trims items, drops duplicates and sorts,
// so "r2, r1" and "r1,r2" are the same configuration.
func parseList(key, v string) ([]string, error) {
	if strings.TrimSpace(v) == "" {
		return nil, invalid(key, v, "must be a non-empty comma-separated list")
	}
	seen := map[string]bool{}
	var out []string
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if !selectorItem.MatchString(item) {
			return nil, invalid(key, v, fmt.Sprintf("item %q is not a valid name (letters, digits, '-', '_', '.'; up to 63)", item))
		}
		if !seen[item] {
			seen[item] = true
			out = append(out, item)
		}
	}
	sort.Strings(out)
	return out, nil
}
