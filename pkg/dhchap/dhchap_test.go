package dhchap

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os/exec"
	"strings"
	"testing"
	"testing/iotest"
)

// Vectors written by nvme-cli 2.3 `gen-dhchap-key --secret=<hex>` for the
// keys 00 01 02 ... (32, 48, 64 bytes). The SHA-256 one is
// `--hmac=1 --nqn=nqn.2014-08.org.nvmexpress:uuid:6b1d8e3c-0000-4000-8000-000000000001`,
// for which nvme-cli stores HMAC-SHA256(key, NQN || "NVMe-over-Fabrics")
// rather than the key (see Generate).
const (
	cli32     = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:"
	cli48     = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vcSEgBQ==:"
	cli64     = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P4zODhA=:"
	cliSHA256 = "DHHC-1:01:y7K5BXOri6aloYOUtmHyOKcRrceXu4i65/M+GybkJvdUYpgk:"
)

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// encodeRaw builds a representation by hand, with any hh and payload, so
// tests can make every kind of broken secret.
func encodeRaw(hh string, key []byte, crc uint32) string {
	raw := binary.LittleEndian.AppendUint32(bytes.Clone(key), crc)
	return Prefix + hh + ":" + base64.StdEncoding.EncodeToString(raw) + ":"
}

func TestParseNvmeCliVectors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		hash Hash
		key  []byte
	}{
		{cli32, HashNone, seq(32)},
		{cli48, HashNone, seq(48)},
		{cli64, HashNone, seq(64)},
		{cliSHA256, HashSHA256, nil},
	} {
		s, err := Parse(tc.in)
		if err != nil {
			t.Fatalf("Parse(nvme-cli vector) = %v", err)
		}
		if s.Hash() != tc.hash || (tc.key != nil && !bytes.Equal(s.key, tc.key)) {
			t.Errorf("Parse = hash %v key %x; want %v %x", s.Hash(), s.key, tc.hash, tc.key)
		}
		if got := s.Encode(); got != tc.in {
			t.Errorf("Encode = %q, want the input back %q", got, tc.in)
		}
	}
}

func TestParseErrors(t *testing.T) {
	good := cli32
	key := seq(32)
	crc := crc32.ChecksumIEEE(key)
	b64 := strings.TrimSuffix(strings.TrimPrefix(good, "DHHC-1:00:"), ":")
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "empty"},
		{"trailing newline", good + "\n", "whitespace"},
		{"leading space", " " + good, "whitespace"},
		{"wrong prefix", "DHHC-2:00:" + b64 + ":", `does not start with "DHHC-1:"`},
		{"lowercase prefix", "dhhc-1:00:" + b64 + ":", `does not start with`},
		{"no prefix", b64, `does not start with`},
		{"one-digit hash", "DHHC-1:0:" + b64 + ":", "two-digit"},
		{"hex hash", "DHHC-1:0a:" + b64 + ":", "two-digit"},
		{"missing hash", "DHHC-1:" + b64, "two-digit"},
		{"hash 04", encodeRaw("04", key, crc), "transformation hash 04"},
		{"hash 99", encodeRaw("99", key, crc), "transformation hash 99"},
		{"no trailing colon", "DHHC-1:00:" + b64, "does not end with ':'"},
		{"garbage after colon", good + "x", "does not end with ':'"},
		{"extra colon", "DHHC-1:00:" + b64 + "::", "not base64"},
		{"bad character", "DHHC-1:00:" + b64[:5] + "*" + b64[6:] + ":", "character 6"},
		{"url alphabet", "DHHC-1:00:" + strings.NewReplacer("+", "-", "/", "_").Replace(base64.StdEncoding.EncodeToString(append(bytes.Repeat([]byte{0xfb, 0xff}, 16), 0, 0, 0, 0))) + ":", "not base64"},
		{"unpadded", strings.TrimRight(cli48, "=:") + ":", "canonical padded base64"},
		{"padding inside", "DHHC-1:00:" + b64[:8] + "=" + b64[9:] + ":", "canonical padded base64"},
		{"31-byte key", encodeRaw("00", key[:31], crc32.ChecksumIEEE(key[:31])), "decodes to 35 bytes"},
		{"33-byte key", encodeRaw("00", seq(33), crc32.ChecksumIEEE(seq(33))), "decodes to 37 bytes"},
		{"16-byte key", encodeRaw("00", seq(16), crc32.ChecksumIEEE(seq(16))), "decodes to 20 bytes"},
		{"empty key", "DHHC-1:00::", "decodes to 0 bytes"},
		{"crc flipped", encodeRaw("00", key, crc^1), "CRC-32"},
		{"crc big endian", encodeRaw("00", key, bytesSwap(crc)), "CRC-32"},
		{"key bit flipped", encodeRaw("00", append([]byte{1}, key[1:]...), crc), "CRC-32"},
		{"sha256 with 48 bytes", encodeRaw("01", seq(48), crc32.ChecksumIEEE(seq(48))), "needs 32"},
		{"sha384 with 32 bytes", encodeRaw("02", key, crc), "needs 48"},
		{"sha512 with 48 bytes", encodeRaw("03", seq(48), crc32.ChecksumIEEE(seq(48))), "needs 64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.in)
			if !errors.Is(err, ErrInvalidSecret) {
				t.Fatalf("Parse = %v, want ErrInvalidSecret", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			assertNoLeak(t, err.Error(), tc.in)
			if Validate(tc.in) == nil {
				t.Errorf("Validate accepted what Parse refused")
			}
		})
	}
}

func bytesSwap(v uint32) uint32 {
	return v>>24 | (v>>8)&0xff00 | (v<<8)&0xff0000 | v<<24
}

// assertNoLeak fails when text contains any run of 8 or more characters of
// the secret's base64 part, or its decoded key in hex.
func assertNoLeak(t *testing.T, text, secret string) {
	t.Helper()
	enc := secret
	if i := strings.Index(secret, ":"); i >= 0 && strings.HasPrefix(secret, Prefix) && len(secret) > 10 {
		enc = secret[10:]
	}
	enc = strings.Trim(enc, ":=\n ")
	for i := 0; i+8 <= len(enc); i++ {
		if strings.Contains(text, enc[i:i+8]) {
			t.Fatalf("%q leaks part of the secret (%q)", text, enc[i:i+8])
		}
	}
	if s, err := Parse(secret); err == nil {
		if strings.Contains(strings.ToLower(text), fmt.Sprintf("%x", s.key[:8])) {
			t.Fatalf("%q leaks the key in hex", text)
		}
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		h   Hash
		n   int
		ok  bool
		msg string
	}{
		{HashNone, 32, true, ""}, {HashNone, 48, true, ""}, {HashNone, 64, true, ""},
		{HashSHA256, 32, true, ""}, {HashSHA384, 48, true, ""}, {HashSHA512, 64, true, ""},
		{HashNone, 0, false, "0 bytes"}, {HashNone, 40, false, "40 bytes"},
		{HashSHA256, 64, false, "needs 32"}, {Hash(4), 32, false, "hash 4"},
	} {
		key := seq(tc.n)
		s, err := New(tc.h, key)
		if tc.ok != (err == nil) {
			t.Errorf("New(%v, %d bytes) = %v", tc.h, tc.n, err)
			continue
		}
		if !tc.ok {
			if !errors.Is(err, ErrInvalidSecret) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("New(%v, %d bytes) = %v, want ErrInvalidSecret saying %q", tc.h, tc.n, err, tc.msg)
			}
			continue
		}
		key[0] ^= 0xff // New copies: the caller's buffer is not the secret
		if s.key[0] != 0 || s.KeyLen() != tc.n || s.Hash() != tc.h {
			t.Errorf("New(%v, %d) = %#v", tc.h, tc.n, s)
		}
		back, err := Parse(s.Encode())
		if err != nil || !back.Equal(s) {
			t.Errorf("Parse(Encode()) = %v, %v", back, err)
		}
	}
}

func TestGenerate(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		txt, err := Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Parse(txt)
		if err != nil {
			t.Fatalf("Parse(Generate()) = %v", err)
		}
		if s.Hash() != HashNone || s.KeyLen() != GeneratedKeySize || !strings.HasPrefix(txt, "DHHC-1:00:") || len(txt) != 59 {
			t.Fatalf("Generate() = hash %v, %d-byte key, %d chars", s.Hash(), s.KeyLen(), len(txt))
		}
		if seen[txt] {
			t.Fatal("Generate repeated a secret")
		}
		seen[txt] = true
	}
	// Deterministic for a given reader: the bytes read are the key.
	txt, err := Generate(bytes.NewReader(seq(32)))
	if err != nil || txt != cli32 {
		t.Fatalf("Generate(00 01 02...) = %q, %v; want nvme-cli's %q", txt, err, cli32)
	}
	// A short or failing reader is an error, never a weak key.
	if _, err := Generate(bytes.NewReader(seq(31))); err == nil {
		t.Error("Generate accepted 31 bytes of randomness")
	}
	if _, err := Generate(iotest.ErrReader(errors.New("no entropy"))); err == nil || !strings.Contains(err.Error(), "no entropy") {
		t.Errorf("Generate(failing reader) = %v", err)
	}
}

func TestRedaction(t *testing.T) {
	s, err := Parse(cli64)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{
		s.String(), s.GoString(), fmt.Sprintf("%v", s), fmt.Sprintf("%+v", s), fmt.Sprintf("%#v", s),
		fmt.Sprintf("%s", s), fmt.Sprintf("%q", s), fmt.Sprint([]Secret{s}),
		fmt.Sprintf("%+v", struct{ S Secret }{s}), Redact(cli64),
	} {
		assertNoLeak(t, out, cli64)
		if !strings.Contains(out, "redacted") {
			t.Errorf("%q does not say it is redacted", out)
		}
	}
	if got, want := fmt.Sprintf("%x", s), fmt.Sprintf("%x", s.String()); got != want {
		t.Errorf("%%x shows %s, not the redacted form", got)
	}
	if got, want := s.String(), "DHHC-1:00:<redacted 64-byte key fp="+s.Fingerprint()+">:"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := Redact(cli32 + "\n"); got != "<redacted invalid secret>" {
		t.Errorf("Redact(invalid) = %q", got)
	}
	if got := Redact(""); got != "" {
		t.Errorf("Redact(\"\") = %q, want empty", got)
	}
	var zero Secret
	if !zero.IsZero() || zero.Encode() != "" || zero.String() != "<no secret>" || zero.Fingerprint() != "" {
		t.Errorf("zero Secret: %q %q %q", zero.Encode(), zero.String(), zero.Fingerprint())
	}
	other, _ := Parse(cli32)
	if s.Fingerprint() == other.Fingerprint() || len(s.Fingerprint()) != 8 {
		t.Errorf("fingerprints %q %q", s.Fingerprint(), other.Fingerprint())
	}
}

func TestEqual(t *testing.T) {
	a, _ := Parse(cli32)
	b, _ := New(HashNone, seq(32))
	c, _ := New(HashSHA256, seq(32))
	if !a.Equal(b) || a.Equal(c) || a.Equal(Secret{}) || !(Secret{}).Equal(Secret{}) {
		t.Error("Secret.Equal is wrong")
	}
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{cli32, cli32, true},
		{cli32, cli48, false},
		{cli32, c.Encode(), false},
		{"", "", true},
		{cli32, "", false},
		{"junk", "junk", true},
		{"junk", "junk2", false},
		{cli32, cli32 + "\n", false},
	} {
		if got := Equal(tc.a, tc.b); got != tc.want {
			t.Errorf("Equal(%s, %s) = %v", Redact(tc.a), Redact(tc.b), got)
		}
	}
}

func TestHashString(t *testing.T) {
	for h, want := range map[Hash]string{HashNone: "none", HashSHA256: "sha256", HashSHA384: "sha384", HashSHA512: "sha512", 9: "hash(9)"} {
		if h.String() != want {
			t.Errorf("%d.String() = %q", h, h.String())
		}
	}
}

// TestNvmeCliAgrees runs nvme-cli's own generator and checker when the
// host has nvme-cli (Debian's nvme-cli package): every key nvme-cli
// generates parses, every key Generate makes passes check-dhchap-key, and
// the broken keys of TestParseErrors that nvme-cli sees are refused by it
// too.
func TestNvmeCliAgrees(t *testing.T) {
	nvme, err := exec.LookPath("nvme")
	if err != nil {
		t.Skip("nvme-cli is not installed")
	}
	if out, err := exec.Command(nvme, "gen-dhchap-key", "--help").CombinedOutput(); err != nil && !strings.Contains(string(out), "gen-dhchap-key") {
		t.Skipf("this nvme-cli has no gen-dhchap-key: %s", out)
	}
	for _, args := range [][]string{{}, {"-l", "48"}, {"-l", "64"}, {"-m", "1"}, {"-m", "2"}, {"-m", "3"}} {
		out, err := exec.Command(nvme, append([]string{"gen-dhchap-key", "-n", "nqn.2014-08.org.nvmexpress:uuid:6b1d8e3c-0000-4000-8000-000000000001"}, args...)...).Output()
		if err != nil {
			t.Fatalf("nvme gen-dhchap-key %v: %v", args, err)
		}
		txt := strings.TrimSpace(string(out))
		if err := Validate(txt); err != nil {
			t.Errorf("nvme gen-dhchap-key %v made a key Parse refuses: %v", args, err)
		}
	}
	check := func(key string) (bool, string) {
		out, err := exec.Command(nvme, "check-dhchap-key", "-k", key).CombinedOutput()
		return err == nil && strings.Contains(string(out), "Key is valid"), string(out)
	}
	for i := 0; i < 5; i++ {
		txt, err := Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if ok, out := check(txt); !ok {
			t.Errorf("nvme check-dhchap-key refuses a generated key: %s", out)
		}
	}
	for _, k := range []string{cli32, cli48, cli64, cliSHA256} {
		if ok, out := check(k); !ok {
			t.Errorf("nvme check-dhchap-key refuses vector: %s", out)
		}
	}
	key := seq(32)
	for _, bad := range []string{
		encodeRaw("00", key, crc32.ChecksumIEEE(key)^1),
		encodeRaw("00", seq(40), crc32.ChecksumIEEE(seq(40))),
		encodeRaw("04", key, crc32.ChecksumIEEE(key)),
		encodeRaw("02", key, crc32.ChecksumIEEE(key)),
		encodeRaw("01", seq(48), crc32.ChecksumIEEE(seq(48))),
	} {
		if ok, _ := check(bad); ok {
			t.Errorf("nvme check-dhchap-key accepts a key Parse refuses (%s)", Redact(bad))
		}
		if Validate(bad) == nil {
			t.Errorf("Parse accepts %s", Redact(bad))
		}
	}
}
