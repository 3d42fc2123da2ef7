package nvmeof

import (
	"fmt"

	"github.com/nvmirror/nvmirror/pkg/dhchap"
)

// NVMe in-band authentication (DH-HMAC-CHAP) secrets, as both sides hand
// them to the kernel. Secrets are credentials: they reach the kernel and
// nowhere else. Every message that concerns one shows RedactSecret's form
// instead.

// RedactSecret is what logs and errors show in place of a secret.
func RedactSecret(s string) string {
	if s == "" {
		return `""`
	}
	return dhchap.Redact(s)
}

// CanonicalSecret validates a secret with pkg/dhchap and returns the
// canonical text to hand the kernel. field names the option in errors,
// which carry ErrInvalidArgument and the reason, never the value.
func CanonicalSecret(field, s string) (string, error) {
	sec, err := dhchap.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrInvalidArgument, field, err)
	}
	return sec.Encode(), nil
}
