package mdraid

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNormalizeUUID(t *testing.T) {
	const canonical = "8b298196:48aa4550:d7d4d20e:9af2a785"
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr bool
	}{
		{name: "mdadm form", in: "8b298196:48aa4550:d7d4d20e:9af2a785", want: canonical},
		{name: "sysfs form", in: "8b298196-48aa-4550-d7d4-d20e9af2a785", want: canonical},
		{name: "bare hex", in: "8b29819648aa4550d7d4d20e9af2a785", want: canonical},
		{name: "upper case", in: "8B298196:48AA4550:D7D4D20E:9AF2A785", want: canonical},
		{name: "zero", in: "00000000-0000-0000-0000-000000000000", want: zeroUUID},
		{name: "empty", in: "", wantErr: true},
		{name: "short", in: "8b298196:48aa4550:d7d4d20e:9af2a78", wantErr: true},
		{name: "long", in: "8b298196:48aa4550:d7d4d20e:9af2a7851", wantErr: true},
		{name: "mdadm separators in sysfs places", in: "8b298196:48aa:4550:d7d4:d20e9af2a785", wantErr: true},
		{name: "sysfs separators in mdadm places", in: "8b298196-48aa4550-d7d4d20e-9af2a785", wantErr: true},
		{name: "mixed separators", in: "8b298196:48aa4550-d7d4d20e:9af2a785", wantErr: true},
		{name: "non-hex digit", in: "8b298196:48aa4550:d7d4d20e:9af2a78g", wantErr: true},
		{name: "white space", in: " 8b298196:48aa4550:d7d4d20e:9af2a78", wantErr: true},
		{name: "separator at start", in: ":8b29819648aa4550d7d4d20e9af2a785", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeUUID(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidArgument) {
					t.Fatalf("NormalizeUUID(%q) = %q, %v; want ErrInvalidArgument", tt.in, got, err)
				}
				if !strings.Contains(err.Error(), tt.in) {
					t.Errorf("error %q does not name the input %q", err, tt.in)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeUUID(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// The kernel (md/uuid) and mdadm (--detail, --examine) must name the same
// array the same way once normalised; the fixtures come from one boot.
func TestNormalizeUUIDAgreesAcrossKernelAndMdadm(t *testing.T) {
	sysfs := sysfsFixture(t, "raid1-clean")
	detail, err := ParseDetailExport(readFixture(t, "mdadm/detail-clean.stdout"))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := ParseExamineExport(readFixture(t, "mdadm/examine.stdout"))
	if err != nil {
		t.Fatal(err)
	}
	fromKernel, err := NormalizeUUID(sysfs["md127/md/uuid"])
	if err != nil {
		t.Fatal(err)
	}
	if fromKernel != detail.UUID || fromKernel != sb.UUID {
		t.Errorf("sysfs %s, detail %s, examine %s: want one UUID", fromKernel, detail.UUID, sb.UUID)
	}
}

func readFixture(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
