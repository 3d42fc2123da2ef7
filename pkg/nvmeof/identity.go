package nvmeof

import (
	"crypto/sha1" //nolint:gosec // RFC 4122 version 5 UUIDs are defined on SHA-1; not a security use.
	"encoding/hex"
	"fmt"
)

// identityNamespace is the fixed RFC 4122 namespace UUID under which all
// nvmirror replica identities are derived. Changing it changes every
// namespace UUID/NGUID/serial, so it must never change.
var identityNamespace = [16]byte{
	0x33, 0x4c, 0x44, 0x7f, 0xca, 0xde, 0x46, 0xb9,
	0xb5, 0x67, 0xb8, 0xb4, 0x32, 0x10, 0x8b, 0xca,
} // 334c447f-cade-46b9-b567-b8b432108bca

// derive hashes the namespace UUID, a purpose label and the replica ID. The
// label keeps the UUID, NGUID and serial of one replica unrelated to each
// other, so a host never sees the same 16 bytes as one namespace's UUID and
// another's NGUID.
func derive(label, replicaID string) [sha1.Size]byte {
	h := sha1.New() //nolint:gosec // see import comment
	h.Write(identityNamespace[:])
	h.Write([]byte(label))
	h.Write([]byte(replicaID))
	var out [sha1.Size]byte
	copy(out[:], h.Sum(nil))
	return out
}

// NamespaceUUID returns the RFC 4122 version 5 UUID of replicaID in
// nvmirror's namespace. Each replica needs its own namespace UUID: a host
// ignores a namespace whose UUID duplicates one it already has, and the
// initiator checks this UUID before using a device.
func NamespaceUUID(replicaID string) string {
	// Plain v5: SHA-1(namespace || name), no label, so other tools can
	// recompute it with any UUIDv5 implementation.
	h := sha1.New() //nolint:gosec // see import comment
	h.Write(identityNamespace[:])
	h.Write([]byte(replicaID))
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = (u[6] & 0x0f) | 0x50 // version 5
	u[8] = (u[8] & 0x3f) | 0x80 // RFC 4122 variant
	return formatUUID(u)
}

// NamespaceNGUID returns 32 lowercase hex digits (16 bytes) derived from
// replicaID, distinct from NamespaceUUID's bytes, for nvmet's device_nguid.
func NamespaceNGUID(replicaID string) string {
	d := derive("nguid:", replicaID)
	return hex.EncodeToString(d[:16])
}

// SerialFor returns a stable serial number (20 lowercase hex digits, the
// NVMe serial field's full width) for replicaID. Serials must differ per
// replica so that hosts never merge two replicas' subsystems.
func SerialFor(replicaID string) string {
	d := derive("serial:", replicaID)
	return hex.EncodeToString(d[:10])
}

func formatUUID(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// ValidateSerial checks that serial fits nvmet's attr_serial the way
// SerialFor's serials do: at most 20 characters (the NVMe field's width),
// hexadecimal only.
func ValidateSerial(serial string) error {
	if len(serial) > 20 {
		return fmt.Errorf("%w: serial %q is longer than 20 characters", ErrInvalidArgument, serial)
	}
	for i := 0; i < len(serial); i++ {
		if !isHex(serial[i]) {
			return fmt.Errorf("%w: serial %q must be hexadecimal", ErrInvalidArgument, serial)
		}
	}
	return nil
}
