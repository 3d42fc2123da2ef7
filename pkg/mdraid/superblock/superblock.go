// Package superblock parses the md 1.2 superblock (struct mdp_superblock_1
// of the kernel's include/uapi/linux/raid/md_p.h) from a member's bytes,
// without running mdadm: the storage node agent reads it from replica
// files and snapshot copies, which are not block devices md knows about.
//
// Only the fields nvmirror checks are decoded. All fields are little
// endian. Offsets (bytes into the superblock):
//
//	0    magic            __le32  0xa92b4efc
//	4    major_version    __le32  1
//	8    feature_map      __le32  bit 1 (MD_FEATURE_RECOVERY_OFFSET)
//	16   set_uuid         __u8[16]
//	128  data_offset      __le64  sectors
//	152  recovery_offset  __le64  sectors (valid with the feature bit)
//	160  dev_number       __le32  this device's slot in dev_roles
//	200  events           __le64
//	208  resync_offset    __le64
//	220  max_dev          __le32  entries in dev_roles
//	256  dev_roles        __le16[max_dev]
package superblock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Offset is where metadata 1.2 puts the superblock: 4 KiB from the start
// of the member.
const Offset = 4096

// Size is the most a 1.x superblock occupies (it must fit in 4 KiB:
// 256 bytes of header and two bytes per dev_roles slot).
const Size = 4096

// Magic is MD_SB_MAGIC.
const Magic uint32 = 0xa92b4efc

// FeatureRecoveryOffset is MD_FEATURE_RECOVERY_OFFSET: recovery_offset is
// valid, the device is being recovered.
const FeatureRecoveryOffset uint32 = 2

const (
	offMagic          = 0
	offMajorVersion   = 4
	offFeatureMap     = 8
	offSetUUID        = 16
	offDataOffset     = 128
	offRecoveryOffset = 152
	offDevNumber      = 160
	offEvents         = 200
	offResyncOffset   = 208
	offMaxDev         = 220
	offDevRoles       = 256
	// maxDevs is how many dev_roles fit in Size.
	maxDevs = (Size - offDevRoles) / 2
)

// Role values of dev_roles (MD_DISK_ROLE_*); below RoleMax a role is the
// active mirror position.
const (
	RoleSpare   = 0xffff
	RoleFaulty  = 0xfffe
	RoleJournal = 0xfffd
	RoleMax     = 0xff00
)

// ErrNoSuperblock: the bytes do not start with the md magic (e.g. the
// replica of a one-replica volume, or a blank file).
var ErrNoSuperblock = errors.New("no md superblock")

// Superblock is the part of an md 1.2 superblock nvmirror uses.
type Superblock struct {
	// ArrayUUID is set_uuid as mdadm prints it: 8:8:8:8 lowercase hex.
	ArrayUUID             string
	FeatureMap            uint32
	Events                uint64
	DevNumber             uint32
	DevRoles              []uint16
	DataOffsetSectors     uint64
	RecoveryOffsetSectors uint64
	ResyncOffsetSectors   uint64
}

// Recovering reports MD_FEATURE_RECOVERY_OFFSET: the device was being
// recovered and holds valid data only below RecoveryOffsetSectors.
func (s *Superblock) Recovering() bool { return s.FeatureMap&FeatureRecoveryOffset != 0 }

// Clean reports an array stopped cleanly: resync_offset is MaxSector
// (all ones), so its in-sync members hold the same data.
func (s *Superblock) Clean() bool { return s.ResyncOffsetSectors == ^uint64(0) }

// Role is the role of this device (its dev_roles slot), RoleSpare when the
// slot is beyond max_dev.
func (s *Superblock) Role() uint16 {
	if int(s.DevNumber) >= len(s.DevRoles) {
		return RoleSpare
	}
	return s.DevRoles[s.DevNumber]
}

// Parse decodes a superblock from b, the bytes at Offset. A wrong magic is
// ErrNoSuperblock; a superblock that claims what cannot be (another major
// version, more roles than fit) is an error of its own.
func Parse(b []byte) (*Superblock, error) {
	if len(b) < offDevRoles {
		return nil, fmt.Errorf("md superblock: %d bytes, need at least %d", len(b), offDevRoles)
	}
	le := binary.LittleEndian
	if m := le.Uint32(b[offMagic:]); m != Magic {
		return nil, fmt.Errorf("%w (magic %#08x)", ErrNoSuperblock, m)
	}
	if v := le.Uint32(b[offMajorVersion:]); v != 1 {
		return nil, fmt.Errorf("md superblock: major_version %d, want 1", v)
	}
	maxDev := le.Uint32(b[offMaxDev:])
	if maxDev > maxDevs {
		return nil, fmt.Errorf("md superblock: max_dev %d exceeds the %d roles a 1.x superblock holds", maxDev, maxDevs)
	}
	end := offDevRoles + 2*int(maxDev)
	if len(b) < end {
		return nil, fmt.Errorf("md superblock: max_dev %d needs %d bytes, have %d", maxDev, end, len(b))
	}
	s := &Superblock{
		ArrayUUID:             FormatUUID(b[offSetUUID : offSetUUID+16]),
		FeatureMap:            le.Uint32(b[offFeatureMap:]),
		Events:                le.Uint64(b[offEvents:]),
		DevNumber:             le.Uint32(b[offDevNumber:]),
		DataOffsetSectors:     le.Uint64(b[offDataOffset:]),
		RecoveryOffsetSectors: le.Uint64(b[offRecoveryOffset:]),
		ResyncOffsetSectors:   le.Uint64(b[offResyncOffset:]),
		DevRoles:              make([]uint16, maxDev),
	}
	for i := range s.DevRoles {
		s.DevRoles[i] = le.Uint16(b[offDevRoles+2*i:])
	}
	return s, nil
}

// Read reads the superblock of the member r (a replica file or a copy of
// one) at Offset. A member too short to hold one has none (ErrNoSuperblock).
func Read(r io.ReaderAt) (*Superblock, error) {
	b := make([]byte, Size)
	n, err := r.ReadAt(b, Offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read md superblock: %w", err)
	}
	if n < offDevRoles {
		return nil, fmt.Errorf("%w: member ends %d bytes after the superblock offset", ErrNoSuperblock, n)
	}
	return Parse(b[:n])
}

// FormatUUID prints 16 UUID bytes as mdadm does for 1.x metadata: the
// bytes in order, in four groups of eight hex digits separated by ':'
// (mdraid.NormalizeUUID's form).
func FormatUUID(u []byte) string {
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 35)
	for i, c := range u[:16] {
		if i > 0 && i%4 == 0 {
			out = append(out, ':')
		}
		out = append(out, hex[c>>4], hex[c&0xf])
	}
	return string(out)
}
