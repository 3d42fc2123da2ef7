// Package dhchap handles NVMe in-band authentication secrets (DH-HMAC-CHAP)
// in their textual representation, as the NVMe base specification defines
// it and as Linux (nvmet configfs, /dev/nvme-fabrics, the host controller's
// sysfs) and nvme-cli (gen-dhchap-key, check-dhchap-key) read and write it:
//
//	DHHC-1:<hh>:<base64(key || crc32(key) as 4 bytes little endian)>:
//
// hh names the hash the consumer applies to the key before use (00 none,
// 01 SHA-256, 02 SHA-384, 03 SHA-512); the key is 32, 48 or 64 bytes.
//
// A secret is a credential: nothing in this package puts one into an error
// message, and Secret's String and GoString methods redact it, so a Secret
// passed to a logger or to fmt shows its shape and fingerprint only. The
// one way to get the text back is Secret.Encode, for writing to the kernel.
package dhchap

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
)

// ErrInvalidSecret is wrapped by every error of Parse and New. The message
// next to it says what is wrong, never what the secret is.
var ErrInvalidSecret = errors.New("invalid DH-HMAC-CHAP secret")

// Prefix starts every secret in the DHHC-1 representation.
const Prefix = "DHHC-1:"

// GeneratedKeySize is the key length Generate uses: 256 bits, the strength
// of the SHA-256 HMAC that DH-HMAC-CHAP negotiates by default; longer keys
// add nothing to it.
const GeneratedKeySize = 32

// Hash is the transformation hash identifier (the hh field).
type Hash uint8

// Transformation hashes of the representation.
const (
	HashNone   Hash = 0
	HashSHA256 Hash = 1
	HashSHA384 Hash = 2
	HashSHA512 Hash = 3
)

// String names the hash as the kernel and nvme-cli do in messages.
func (h Hash) String() string {
	switch h {
	case HashNone:
		return "none"
	case HashSHA256:
		return "sha256"
	case HashSHA384:
		return "sha384"
	case HashSHA512:
		return "sha512"
	}
	return fmt.Sprintf("hash(%d)", uint8(h))
}

// keySize returns the key length a transformation hash requires, 0 when
// any valid length goes (no transformation).
func (h Hash) keySize() int {
	switch h {
	case HashSHA256:
		return 32
	case HashSHA384:
		return 48
	case HashSHA512:
		return 64
	}
	return 0
}

func validKeySize(n int) bool { return n == 32 || n == 48 || n == 64 }

// Secret is a parsed DH-HMAC-CHAP secret. The zero Secret is "no secret"
// (IsZero); its key never shows in fmt output or logs.
type Secret struct {
	hash Hash
	key  []byte
}

// New returns the secret made of key (32, 48 or 64 bytes) with
// transformation hash h. With h other than HashNone the key length must be
// the hash's output length (32, 48, 64), as nvme-cli requires. key is
// copied.
func New(h Hash, key []byte) (Secret, error) {
	if h > HashSHA512 {
		return Secret{}, fmt.Errorf("%w: transformation hash %d is not one of 00 (none), 01 (SHA-256), 02 (SHA-384), 03 (SHA-512)",
			ErrInvalidSecret, uint8(h))
	}
	if !validKeySize(len(key)) {
		return Secret{}, fmt.Errorf("%w: key is %d bytes; it must be 32, 48 or 64", ErrInvalidSecret, len(key))
	}
	if n := h.keySize(); n != 0 && n != len(key) {
		return Secret{}, fmt.Errorf("%w: key is %d bytes but transformation hash %02d (%s) needs %d",
			ErrInvalidSecret, len(key), uint8(h), h, n)
	}
	return Secret{hash: h, key: bytes.Clone(key)}, nil
}

// Generate returns a new secret in the DHHC-1 representation: 32 bytes from
// rand (crypto/rand.Reader in production) with transformation hash 00.
//
// Why no transformation: the transformation (hh 01-03) replaces the key by
// HMAC(key, host NQN || "NVMe-over-Fabrics") before use, which only binds a
// secret to one host NQN when the same secret is configured for several
// hosts. nvmirror generates a random key per host and never shares it, so
// the binding adds nothing, while implementations have disagreed on who
// applies it: nvme-cli 2.x's gen-dhchap-key --hmac applied it while
// generating and still wrote hh 01-03, so the kernel applied it a second
// time at authentication. Untransformed keys mean the same thing to every
// implementation (and are nvme-cli's default).
func Generate(rand io.Reader) (string, error) {
	key := make([]byte, GeneratedKeySize)
	if _, err := io.ReadFull(rand, key); err != nil {
		return "", fmt.Errorf("generating a DH-HMAC-CHAP key: reading randomness: %w", err)
	}
	s, err := New(HashNone, key)
	if err != nil {
		return "", err
	}
	return s.Encode(), nil
}

// Parse reads a secret in the DHHC-1 representation and checks everything
// the kernel checks before it uses a key (prefix, hash identifier, base64,
// key length, CRC), so a secret Parse accepts is one the kernel accepts, and
// every secret the kernel refuses Parse refuses (checked on 6.12, host and
// target, by test/kernel's TestAuthKeyFormatMatchesKernel).
//
// Parse is stricter than the kernel where the kernel's parser is lenient by
// accident; it accepts only the canonical form nvme-cli writes and
// check-dhchap-key accepts: exactly two digits 00-03, padded standard
// base64, the trailing ':', nothing before or after (no whitespace), and a
// key length matching the transformation hash (01: 32 bytes, 02: 48, 03: 64).
// The 6.12 kernel also takes a key length that does not match the hash, a
// missing trailing ':', text after it, unpadded base64, and (until a target
// asks to authenticate) hash 04. Callers hand the kernel Encode's
// canonical text, never their input: the kernel logs some malformed
// secrets verbatim ("Invalid DH-CHAP secret ...").
func Parse(s string) (Secret, error) {
	bad := func(format string, args ...any) (Secret, error) {
		return Secret{}, fmt.Errorf("%w: "+format, append([]any{ErrInvalidSecret}, args...)...)
	}
	if s == "" {
		return bad("empty")
	}
	if t := strings.TrimSpace(s); t != s {
		return bad("surrounding whitespace or newline (trim it)")
	}
	if !strings.HasPrefix(s, Prefix) {
		return bad("does not start with %q", Prefix)
	}
	rest := s[len(Prefix):]
	if len(rest) < 3 || !isDigit(rest[0]) || !isDigit(rest[1]) || rest[2] != ':' {
		return bad("%q must be followed by a two-digit transformation hash (00-03) and ':'", Prefix)
	}
	h := Hash((rest[0]-'0')*10 + rest[1] - '0')
	if h > HashSHA512 {
		return bad("transformation hash %02d is not one of 00 (none), 01 (SHA-256), 02 (SHA-384), 03 (SHA-512)", uint8(h))
	}
	enc, ok := strings.CutSuffix(rest[3:], ":")
	if !ok {
		return bad("does not end with ':' after the base64 key")
	}
	for i := 0; i < len(enc); i++ {
		if !isBase64Char(enc[i]) {
			// The offset helps find the typo; the character itself could
			// be part of the key material and is not shown.
			return bad("character %d of the base64 key is not base64 (A-Z a-z 0-9 + / =)", i+1)
		}
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(enc)
	if err != nil || base64.StdEncoding.EncodeToString(raw) != enc {
		return bad("the key is not canonical padded base64 (%d characters)", len(enc))
	}
	if len(raw) < 4 || !validKeySize(len(raw)-4) {
		return bad("decodes to %d bytes; want a 32, 48 or 64 byte key followed by its 4-byte CRC-32 (36, 52 or 68 bytes)", len(raw))
	}
	key, sum := raw[:len(raw)-4], raw[len(raw)-4:]
	if binary.LittleEndian.Uint32(sum) != crc32.ChecksumIEEE(key) {
		return bad("CRC-32 check failed (the key was altered or mistyped)")
	}
	return New(h, key)
}

// Validate reports whether s is a valid secret; see Parse.
func Validate(s string) error {
	_, err := Parse(s)
	return err
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isBase64Char(c byte) bool {
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '='
}

// IsZero reports whether s holds no key.
func (s Secret) IsZero() bool { return len(s.key) == 0 }

// Hash returns the transformation hash.
func (s Secret) Hash() Hash { return s.hash }

// KeyLen returns the key length in bytes (32, 48 or 64; 0 for no secret).
func (s Secret) KeyLen() int { return len(s.key) }

// Encode returns the canonical DHHC-1 representation, the text to write to
// the kernel. It is the only method that reveals the key: never log it.
// The zero Secret encodes as "".
func (s Secret) Encode() string {
	if s.IsZero() {
		return ""
	}
	raw := make([]byte, len(s.key), len(s.key)+4)
	copy(raw, s.key)
	raw = binary.LittleEndian.AppendUint32(raw, crc32.ChecksumIEEE(s.key))
	return fmt.Sprintf("%s%02d:%s:", Prefix, uint8(s.hash), base64.StdEncoding.EncodeToString(raw))
}

// Fingerprint returns 8 hex digits of SHA-256 over the key: enough to tell
// in logs which of two keys a host and a target hold during a rotation,
// nothing that helps recover a random key.
func (s Secret) Fingerprint() string {
	if s.IsZero() {
		return ""
	}
	sum := sha256.Sum256(s.key)
	return hex.EncodeToString(sum[:4])
}

// String is the redacted form, "DHHC-1:00:<redacted 32-byte key fp=1a2b3c4d>:",
// so that fmt's %v and %s and loggers never print the key.
func (s Secret) String() string {
	if s.IsZero() {
		return "<no secret>"
	}
	return fmt.Sprintf("%s%02d:<redacted %d-byte key fp=%s>:", Prefix, uint8(s.hash), len(s.key), s.Fingerprint())
}

// GoString keeps %#v redacted too.
func (s Secret) GoString() string { return "dhchap.Secret(" + s.String() + ")" }

// Equal reports whether both secrets hold the same key and hash. It runs in
// time independent of the key bytes.
func (s Secret) Equal(o Secret) bool {
	return s.hash == o.hash && len(s.key) == len(o.key) && subtle.ConstantTimeCompare(s.key, o.key) == 1
}

// Redact returns text safe to log in place of the secret s: "" stays ""
// (no secret configured), a valid secret shows as Secret.String does, and
// anything else as "<redacted invalid secret>".
func Redact(s string) string {
	if s == "" {
		return ""
	}
	sec, err := Parse(s)
	if err != nil {
		return "<redacted invalid secret>"
	}
	return sec.String()
}

// Equal reports whether two secrets in text form hold the same key, whatever
// their spelling: the kernel echoes a secret back as it was written, so
// comparing parsed keys is what tells "same credential". Two texts that do
// not parse are equal only when identical (compared in constant time).
func Equal(a, b string) bool {
	sa, errA := Parse(a)
	sb, errB := Parse(b)
	if errA == nil && errB == nil {
		return sa.Equal(sb)
	}
	if errA == nil || errB == nil {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
