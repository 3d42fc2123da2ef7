package superblock

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
)

// fields is what build writes into a superblock.
type fields struct {
	magic, major, features, devNumber uint32
	uuid                              [16]byte
	dataOffset, recoveryOffset        uint64
	events, resyncOffset              uint64
	roles                             []uint16
	maxDev                            int // -1: len(roles)
}

func base() fields {
	return fields{
		magic: Magic, major: 1, devNumber: 1,
		uuid:       [16]byte{0x8b, 0x29, 0x81, 0x96, 0x48, 0xaa, 0x45, 0x50, 0xd7, 0xd4, 0xd2, 0x0e, 0x9a, 0xf2, 0xa7, 0x85},
		dataOffset: 8192, events: 42, resyncOffset: ^uint64(0),
		roles: []uint16{0, 1, RoleSpare}, maxDev: -1,
	}
}

// build lays f out at the md_p.h offsets, in a 4 KiB block like on disk;
// every byte it does not set is 0xee so a parser reading the wrong place
// sees garbage.
func build(f fields) []byte {
	b := bytes.Repeat([]byte{0xee}, Size)
	le := binary.LittleEndian
	le.PutUint32(b[0:], f.magic)
	le.PutUint32(b[4:], f.major)
	le.PutUint32(b[8:], f.features)
	copy(b[16:32], f.uuid[:])
	le.PutUint64(b[128:], f.dataOffset)
	le.PutUint64(b[152:], f.recoveryOffset)
	le.PutUint32(b[160:], f.devNumber)
	le.PutUint64(b[200:], f.events)
	le.PutUint64(b[208:], f.resyncOffset)
	n := f.maxDev
	if n < 0 {
		n = len(f.roles)
	}
	le.PutUint32(b[220:], uint32(n))
	for i, r := range f.roles {
		le.PutUint16(b[256+2*i:], r)
	}
	return b
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*fields)
		want    func(*Superblock) bool
		wantErr error // nil: success; errAny: some other error
	}{
		{name: "in sync member", want: func(s *Superblock) bool {
			return s.ArrayUUID == "8b298196:48aa4550:d7d4d20e:9af2a785" && s.Events == 42 && s.DevNumber == 1 &&
				slices.Equal(s.DevRoles, []uint16{0, 1, RoleSpare}) && s.DataOffsetSectors == 8192 &&
				!s.Recovering() && s.Role() == 1 && s.ResyncOffsetSectors == ^uint64(0) && s.Clean()
		}},
		{name: "resync pending is not clean", mod: func(f *fields) { f.resyncOffset = 0 },
			want: func(s *Superblock) bool { return !s.Clean() && s.ResyncOffsetSectors == 0 }},
		{name: "recovering member", mod: func(f *fields) { f.features = FeatureRecoveryOffset | 1; f.recoveryOffset = 123456 },
			want: func(s *Superblock) bool { return s.Recovering() && s.RecoveryOffsetSectors == 123456 }},
		{name: "recovery offset without the feature bit is not recovering", mod: func(f *fields) { f.recoveryOffset = 99 },
			want: func(s *Superblock) bool { return !s.Recovering() }},
		{name: "faulty role", mod: func(f *fields) { f.roles = []uint16{0, RoleFaulty} },
			want: func(s *Superblock) bool { return s.Role() == RoleFaulty }},
		{name: "slot beyond max_dev is a spare", mod: func(f *fields) { f.devNumber = 7 },
			want: func(s *Superblock) bool { return s.Role() == RoleSpare }},
		{name: "no roles", mod: func(f *fields) { f.roles = nil },
			want: func(s *Superblock) bool { return len(s.DevRoles) == 0 }},
		{name: "most roles that fit", mod: func(f *fields) { f.roles = make([]uint16, maxDevs) },
			want: func(s *Superblock) bool { return len(s.DevRoles) == 1920 }},
		{name: "blank", mod: func(f *fields) { f.magic = 0 }, wantErr: ErrNoSuperblock},
		{name: "byte-swapped magic", mod: func(f *fields) { f.magic = 0xfc4e2ba9 }, wantErr: ErrNoSuperblock},
		{name: "version 0.90 layout", mod: func(f *fields) { f.major = 0 }, wantErr: errAny},
		{name: "max_dev beyond 4 KiB", mod: func(f *fields) { f.maxDev = maxDevs + 1 }, wantErr: errAny},
		{name: "max_dev huge", mod: func(f *fields) { f.maxDev = 1 << 30 }, wantErr: errAny},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := base()
			if tc.mod != nil {
				tc.mod(&f)
			}
			s, err := Parse(build(f))
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("Parse: %v", err)
			case tc.wantErr == nil && !tc.want(s):
				t.Fatalf("Parse = %+v", s)
			case tc.wantErr == errAny && (err == nil || errors.Is(err, ErrNoSuperblock)):
				t.Fatalf("Parse = %+v, %v; want an error other than ErrNoSuperblock", s, err)
			case tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Fatalf("Parse err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestParseShort(t *testing.T) {
	b := build(base())
	if _, err := Parse(b[:255]); err == nil {
		t.Fatal("Parse of 255 bytes succeeded")
	}
	// Roles cut off by the end of the buffer.
	if _, err := Parse(b[:256+2]); err == nil {
		t.Fatal("Parse with 3 roles in 2 bytes succeeded")
	}
	if _, err := Parse(b[:256+6]); err != nil {
		t.Fatalf("Parse of exactly the roles: %v", err)
	}
}

func TestRead(t *testing.T) {
	member := make([]byte, 3*Size)
	copy(member[Offset:], build(base()))
	s, err := Read(bytes.NewReader(member))
	if err != nil || s.Events != 42 {
		t.Fatalf("Read = %+v, %v", s, err)
	}
	// The superblock at offset 0 (metadata 1.1) is not 1.2's.
	shifted := make([]byte, 3*Size)
	copy(shifted, build(base()))
	if _, err := Read(bytes.NewReader(shifted)); !errors.Is(err, ErrNoSuperblock) {
		t.Fatalf("Read of a 1.1 layout: %v, want ErrNoSuperblock", err)
	}
	if _, err := Read(bytes.NewReader(make([]byte, Offset+100))); !errors.Is(err, ErrNoSuperblock) {
		t.Fatalf("Read of a short member: %v, want ErrNoSuperblock", err)
	}
	// A member that ends right after a superblock without roles.
	f := base()
	f.roles = nil
	short := append(make([]byte, Offset), build(f)[:256]...)
	if s, err := Read(bytes.NewReader(short)); err != nil || len(s.DevRoles) != 0 {
		t.Fatalf("Read of a member ending after the header = %+v, %v", s, err)
	}
}

// TestFormatUUIDMatchesMdadm: the printed UUID is the form mdraid stores
// and compares (mdadm's), for every byte value.
func TestFormatUUIDMatchesMdadm(t *testing.T) {
	var u [16]byte
	for v := 0; v < 256; v += 17 {
		for i := range u {
			u[i] = byte(v + i)
		}
		got := FormatUUID(u[:])
		norm, err := mdraid.NormalizeUUID(got)
		if err != nil || norm != got {
			t.Fatalf("FormatUUID = %q; NormalizeUUID = %q, %v", got, norm, err)
		}
		if strings.Count(got, ":") != 3 || len(got) != 35 {
			t.Fatalf("FormatUUID = %q", got)
		}
	}
	if b := base(); FormatUUID(b.uuid[:]) != "8b298196:48aa4550:d7d4d20e:9af2a785" {
		t.Fatalf("FormatUUID = %q", FormatUUID(b.uuid[:]))
	}
	if got := FormatUUID(build(base())[16:32]); got != "8b298196:48aa4550:d7d4d20e:9af2a785" {
		t.Fatalf("FormatUUID = %q", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(build(base()))
	g := base()
	g.features = FeatureRecoveryOffset
	f.Add(build(g))
	f.Add(make([]byte, 300))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			return
		}
		// Whatever it accepts, it read within the buffer and the 4 KiB.
		if 256+2*len(s.DevRoles) > len(b) || len(s.DevRoles) > maxDevs {
			t.Fatalf("%d roles from %d bytes", len(s.DevRoles), len(b))
		}
		if binary.LittleEndian.Uint32(b) != Magic {
			t.Fatal("accepted without the magic")
		}
		if _, err := mdraid.NormalizeUUID(s.ArrayUUID); err != nil {
			t.Fatalf("UUID %q: %v", s.ArrayUUID, err)
		}
		_ = s.Role()
	})
}
