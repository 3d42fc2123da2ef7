package k8s

import (
	"fmt"
	"strconv"
	"strings"
)

// quantitySuffixes are the suffixes of Kubernetes resource quantities
// that whole-byte storage sizes use, longest first.
var quantitySuffixes = []struct {
	suffix string
	mult   int64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"Pi", 1 << 50},
	{"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15},
}

// ParseBytes reads a storage quantity ("1Gi", "500M", "1048576") as bytes.
// Fractions and exponents, which storage sizes do not use, are refused
// rather than guessed at.
func ParseBytes(q string) (int64, error) {
	q = strings.TrimSpace(q)
	mult := int64(1)
	num := q
	for _, s := range quantitySuffixes {
		if strings.HasSuffix(q, s.suffix) {
			num, mult = strings.TrimSuffix(q, s.suffix), s.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("quantity %q: not a whole number of bytes with a binary or decimal suffix", q)
	}
	return n * mult, nil
}

// FormatBytes writes bytes as the largest binary unit that divides them.
func FormatBytes(n int64) string {
	for i := 4; i >= 0; i-- {
		s := quantitySuffixes[i]
		if n != 0 && n%s.mult == 0 {
			return strconv.FormatInt(n/s.mult, 10) + s.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
