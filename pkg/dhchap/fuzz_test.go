package dhchap

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse: Parse never panics; whatever it accepts encodes back to the
// same text (the accepted language is exactly the canonical form) and
// parses again to an equal secret; whatever it refuses comes with
// ErrInvalidSecret and an error that does not repeat the input.
func FuzzParse(f *testing.F) {
	for _, s := range []string{cli32, cli48, cli64, cliSHA256, "", "DHHC-1:", "DHHC-1:00:", "DHHC-1:00::",
		"DHHC-1:03:" + strings.Repeat("A", 92) + ":", cli32 + "\n", strings.TrimRight(cli48, "=:") + ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidSecret) {
				t.Fatalf("Parse error without ErrInvalidSecret: %v", err)
			}
			if len(in) >= 16 && strings.Contains(err.Error(), in) {
				t.Fatalf("error %q repeats the input", err)
			}
			if Redact(in) != "" && Redact(in) != "<redacted invalid secret>" {
				t.Fatalf("Redact(invalid) = %q", Redact(in))
			}
			return
		}
		if got := s.Encode(); got != in {
			t.Fatalf("Parse accepted a non-canonical form: Encode = %q for input %q", got, in)
		}
		again, err := Parse(s.Encode())
		if err != nil || !again.Equal(s) {
			t.Fatalf("round trip: %v", err)
		}
		if strings.Contains(s.String(), in[10:len(in)-1]) {
			t.Fatalf("String() shows the key")
		}
	})
}

// FuzzRoundTrip: every key of a valid length, with every hash it may
// carry, survives Encode then Parse.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint8(0), []byte(strings.Repeat("k", 32)))
	f.Add(uint8(2), []byte(strings.Repeat("k", 48)))
	f.Add(uint8(3), []byte(strings.Repeat("\xff", 64)))
	f.Fuzz(func(t *testing.T, h uint8, key []byte) {
		s, err := New(Hash(h), key)
		if err != nil {
			if !errors.Is(err, ErrInvalidSecret) {
				t.Fatalf("New error without ErrInvalidSecret: %v", err)
			}
			return
		}
		back, err := Parse(s.Encode())
		if err != nil {
			t.Fatalf("Parse(Encode()) = %v", err)
		}
		if !back.Equal(s) || back.Hash() != Hash(h) || string(back.key) != string(key) {
			t.Fatalf("round trip changed the secret")
		}
	})
}
