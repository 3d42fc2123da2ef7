package k8s

import "testing"

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"1Gi", 1 << 30, false},
		{"64Mi", 64 << 20, false},
		{"1048576", 1 << 20, false},
		{"2G", 2e9, false},
		{"10k", 10000, false},
		{"1.5Gi", 0, true},
		{"1e9", 0, true},
		{"", 0, true},
		{"-1Mi", 0, true},
	} {
		got, err := ParseBytes(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[int64]string{1 << 30: "1Gi", 3 << 29: "1536Mi", 1000: "1000", 0: "0", 5 << 40: "5Ti"} {
		if got := FormatBytes(in); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", in, got, want)
		}
		if back, err := ParseBytes(FormatBytes(in)); err != nil || back != in {
			t.Errorf("ParseBytes(FormatBytes(%d)) = %d, %v", in, back, err)
		}
	}
}
