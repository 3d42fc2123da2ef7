package nvmeof

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Sentinel errors. Every error returned by this package and by its host and
// nvmet sub-packages wraps at most one of these (with %w) next to a message
// that names the NQN, address or path concerned, so callers branch with errors.Is and humans read the message.
// The exceptions refine another sentinel and are wrapped with it:
// ErrIdentityMismatch with ErrDeviceNotFound, ErrAuthFailed with
// ErrConnectRefused.
var (
	// ErrNotFound: a controller, subsystem, namespace, port or host entry
	// does not exist (or the kernel facility itself is missing).
	ErrNotFound = errors.New("not found")
	// ErrDeviceNotFound: no block device matching an NQN (and namespace
	// identity) is present on this host (yet).
	ErrDeviceNotFound = errors.New("nvme block device not found")
	// ErrIdentityMismatch is wrapped together with ErrDeviceNotFound when a
	// namespace was found under the expected NQN but with another
	// UUID/NGUID. Callers must never use such a device.
	ErrIdentityMismatch = errors.New("namespace identity mismatch")
	// ErrConnectRefused: the target could not be reached or refused the
	// connection (port closed, host not allowed, subsystem not exported...).
	ErrConnectRefused = errors.New("nvme-of connection refused")
	// ErrInvalidArgument: an input failed validation, or the kernel rejected
	// an option string as invalid.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrBusy: the object exists in a state that conflicts with the request
	// (e.g. a port with another address and linked subsystems, an enabled
	// namespace backed by another device, a controller connected with other
	// DH-HMAC-CHAP secrets).
	ErrBusy = errors.New("busy")
	// ErrAuthUnsupported: NVMe in-band authentication (DH-HMAC-CHAP) was
	// asked for but the kernel is built without it; the message names the
	// missing option (CONFIG_NVME_AUTH / CONFIG_NVME_HOST_AUTH on the host,
	// CONFIG_NVME_TARGET_AUTH on the target). Nothing is connected or
	// configured without authentication when this is returned.
	ErrAuthUnsupported = errors.New("NVMe in-band authentication (DH-HMAC-CHAP) is not supported by this kernel")
	// ErrAuthFailed: DH-HMAC-CHAP authentication failed: the target refused
	// the host's secret (wrong or missing), or the host refused the
	// controller's (bidirectional authentication with a wrong controller
	// secret). It refines ErrConnectRefused: both are wrapped, with the
	// kernel's errno, so callers that only know ErrConnectRefused still
	// see a refused connection.
	ErrAuthFailed = errors.New("NVMe in-band authentication (DH-HMAC-CHAP) failed")
)

// MaxNQNLength is the longest NQN the kernel accepts. The NVMe
// specification allows 223 bytes, but Linux's fabrics option parser and
// nvmet both require strlen(nqn) < NVMF_NQN_SIZE (223), so 222 is the real
// limit: accepting 223 would only turn into an obscure EINVAL later.
const MaxNQNLength = 222

// uuidNQNPrefix is the NVMe-defined prefix of UUID-based NQNs.
const uuidNQNPrefix = "nqn.2014-08.org.nvmexpress:uuid:"

// DiscoveryNQN is the well-known discovery subsystem NQN; it can never be
// used as a storage subsystem.
const DiscoveryNQN = "nqn.2014-08.org.nvmexpress.discovery"

// ValidateNQN checks that nqn is an NQN this package can pass to the kernel
// safely. Besides the NVMe format rules ("nqn." prefix, length, the UUID form
// "nqn.2014-08.org.nvmexpress:uuid:<uuid>"), the character set is restricted
// because an NQN becomes a token in the comma-separated fabrics option
// string, a configfs directory name and a symlink name: a ',', '=' or
// newline would inject fabrics options, a '/' would escape the configfs
// directory.
func ValidateNQN(nqn string) error {
	if !strings.HasPrefix(nqn, "nqn.") {
		return fmt.Errorf("%w: NQN %q must start with \"nqn.\"", ErrInvalidArgument, nqn)
	}
	if len(nqn) > MaxNQNLength {
		return fmt.Errorf("%w: NQN %.40q... is %d bytes, the kernel accepts at most %d",
			ErrInvalidArgument, nqn, len(nqn), MaxNQNLength)
	}
	for i := 0; i < len(nqn); i++ {
		if !nqnChar(nqn[i]) {
			return fmt.Errorf("%w: NQN %q contains forbidden character %q at byte %d (allowed: letters, digits and . : - _ + @)",
				ErrInvalidArgument, nqn, nqn[i], i)
		}
	}
	if rest, ok := strings.CutPrefix(nqn, uuidNQNPrefix); ok {
		if !IsUUID(rest) {
			return fmt.Errorf("%w: NQN %q uses the UUID form but %q is not a UUID",
				ErrInvalidArgument, nqn, rest)
		}
	}
	return nil
}

func nqnChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte(".:-_+@", c) >= 0
}

// IsUUID reports whether s has the canonical 8-4-4-4-12 hex form, the only
// form the kernel's uuid_parse accepts (for hostid and device_uuid).
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isHex(s[i]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// NormalizeID turns a UUID, an NGUID (dashed or not) or a sysfs wwid
// ("uuid.<uuid>", "eui.<hex>") into lowercase hex without separators, so
// identities read from different places compare equal. It returns "" for
// values that are not hex identifiers.
func NormalizeID(s string) string {
	s = strings.TrimSpace(s)
	for _, p := range []string{"uuid.", "eui.", "nvme."} {
		s = strings.TrimPrefix(s, p)
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '-' || c == ':':
			continue
		case isHex(c):
			if c >= 'A' && c <= 'F' {
				c += 'a' - 'A'
			}
			b.WriteByte(c)
		default:
			return ""
		}
	}
	return b.String()
}

// ValidNGUID reports whether s is 16 bytes of hex, with or without dashes.
func ValidNGUID(s string) bool {
	n := NormalizeID(s)
	return len(n) == 32 && !strings.HasPrefix(s, "uuid.") && !strings.HasPrefix(s, "eui.")
}

// ParseIP accepts a literal IPv4 or IPv6 address without zone. Zones are
// refused: they are free text and we do not use link-local addresses.
func ParseIP(name, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%w: %s %q is not an IP address", ErrInvalidArgument, name, s)
	}
	return a, nil
}

// ParsePort accepts a decimal TCP port 1-65535 in canonical form. Canonical
// form matters: the kernel compares trsvcid as a string, so "04420" and
// "4420" would be different controllers.
func ParsePort(name, s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != s {
		return 0, fmt.Errorf("%w: %s %q is not a port number 1-65535", ErrInvalidArgument, name, s)
	}
	return n, nil
}
