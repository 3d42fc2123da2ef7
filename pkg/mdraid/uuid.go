package mdraid

import (
	"fmt"
	"strings"
)

// NormalizeUUID returns the one form in which this package stores and
// compares md array UUIDs: 32 lowercase hex digits grouped 8:8:8:8, which is
// how mdadm prints them and what it accepts in --uuid.
//
// It accepts mdadm's form, the 8-4-4-4-12 form of /sys/block/mdX/md/uuid, and
// 32 bare hex digits, in any case. For 1.x metadata (the only kind Create
// writes) mdadm and the kernel both print the superblock's 16 UUID bytes in
// order, so converting between the forms only moves separators. 0.90
// metadata stores the UUID in host-endian words and does not keep that
// property; it is not supported here.
func NormalizeUUID(s string) (string, error) {
	digits, ok := uuidDigits(s)
	if !ok {
		return "", fmt.Errorf("%w: md UUID %q is neither xxxxxxxx:xxxxxxxx:xxxxxxxx:xxxxxxxx nor xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", ErrInvalidArgument, s)
	}
	return digits[0:8] + ":" + digits[8:16] + ":" + digits[16:24] + ":" + digits[24:32], nil
}

// uuidDigits returns the 32 lowercase hex digits of s if s is in one of the
// accepted layouts; the separators must sit exactly where the layout puts them
// so that a truncated or shifted UUID is refused rather than misread.
func uuidDigits(s string) (string, bool) {
	var groups []int
	var sep byte
	switch len(s) {
	case 32:
		groups = []int{32}
	case 35:
		groups, sep = []int{8, 8, 8, 8}, ':'
	case 36:
		groups, sep = []int{8, 4, 4, 4, 12}, '-'
	default:
		return "", false
	}
	var b strings.Builder
	b.Grow(32)
	pos := 0
	for i, n := range groups {
		if i > 0 {
			if s[pos] != sep {
				return "", false
			}
			pos++
		}
		for _, c := range []byte(s[pos : pos+n]) {
			switch {
			case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
				b.WriteByte(c)
			case c >= 'A' && c <= 'F':
				b.WriteByte(c + ('a' - 'A'))
			default:
				return "", false
			}
		}
		pos += n
	}
	return b.String(), true
}

// zeroUUID is what md/uuid reads before the kernel has loaded a superblock,
// e.g. for an array whose members were added but which was never started.
const zeroUUID = "00000000:00000000:00000000:00000000"
