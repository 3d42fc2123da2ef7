package nvmeof

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateNQN(t *testing.T) {
	long := "nqn.2024-01.io.nvmirror:" + strings.Repeat("a", MaxNQNLength-len("nqn.2024-01.io.nvmirror:"))
	tests := []struct {
		name string
		nqn  string
		ok   bool
	}{
		{"plain", "nqn.2024-01.io.nvmirror:vol1", true},
		{"uuid form", "nqn.2014-08.org.nvmexpress:uuid:334c447f-cade-46b9-b567-b8b432108bca", true},
		{"uuid form upper", "nqn.2014-08.org.nvmexpress:uuid:334C447F-CADE-46B9-B567-B8B432108BCA", true},
		{"vendor style", "nqn.1988-11.com.dell:powerstore:00:f03028e73ef7D032D81E", true},
		{"underscore plus at", "nqn.2000-02.com.mikrotik:xy_zab+raid@6", true},
		{"max length", long, true},
		{"too long", long + "a", false},
		{"empty", "", false},
		{"no prefix", "iqn.2024-01.io.nvmirror:vol1", false},
		{"prefix only case", "NQN.2024-01.io.nvmirror:vol1", false},
		{"comma injects option", "nqn.2024-01.io.nvmirror:vol1,hostnqn=evil", false},
		{"equals", "nqn.2024-01.io.nvmirror:a=b", false},
		{"newline", "nqn.2024-01.io.nvmirror:vol1\nnqn=x", false},
		{"carriage return", "nqn.2024-01.io.nvmirror:vol1\r", false},
		{"slash escapes configfs", "nqn.2024-01.io.nvmirror:../../ports/1", false},
		{"space", "nqn.2024-01.io.nvmirror:vol 1", false},
		{"nul", "nqn.2024-01.io.nvmirror:vol\x001", false},
		{"non ascii", "nqn.2024-01.io.nvmirror:völ", false},
		{"bad uuid form", "nqn.2014-08.org.nvmexpress:uuid:not-a-uuid", false},
		{"uuid form too short", "nqn.2014-08.org.nvmexpress:uuid:334c447f-cade-46b9-b567-b8b432108bc", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateNQN(tc.nqn)
			if tc.ok && err != nil {
				t.Fatalf("ValidateNQN(%q) = %v, want nil", tc.nqn, err)
			}
			if !tc.ok {
				if !errors.Is(err, ErrInvalidArgument) {
					t.Fatalf("ValidateNQN(%q) = %v, want ErrInvalidArgument", tc.nqn, err)
				}
				if !strings.Contains(err.Error(), "NQN") {
					t.Errorf("error %q does not say it is about an NQN", err)
				}
			}
		})
	}
}

func TestIsUUID(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"334c447f-cade-46b9-b567-b8b432108bca", true},
		{"334C447F-CADE-46B9-B567-B8B432108BCA", true},
		{"334c447fcade46b9b567b8b432108bca", false},
		{"334c447f-cade-46b9-b567-b8b432108bcg", false},
		{"334c447f-cade-46b9-b567_b8b432108bca", false},
		{"", false},
		{"{334c447f-cade-46b9-b567-b8b432108bca}", false},
	}
	for _, tc := range tests {
		if got := IsUUID(tc.in); got != tc.ok {
			t.Errorf("IsUUID(%q) = %v, want %v", tc.in, got, tc.ok)
		}
	}
}

func TestNormalizeID(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"334C447F-cade-46b9-b567-b8b432108bca", "334c447fcade46b9b567b8b432108bca"},
		{"uuid.334c447f-cade-46b9-b567-b8b432108bca\n", "334c447fcade46b9b567b8b432108bca"},
		{"eui.776e51696aca1f529ff6332e5648d3e2", "776e51696aca1f529ff6332e5648d3e2"},
		{"77:6e:51", "776e51"},
		{"nvme.0000-3834", "00003834"},
		{"not hex", ""},
		{"", ""},
	}
	for _, tc := range tests {
		if got := NormalizeID(tc.in); got != tc.want {
			t.Errorf("NormalizeID(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestValidNGUID(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"776e51696aca1f529ff6332e5648d3e2", true},
		{"776e5169-6aca-1f52-9ff6-332e5648d3e2", true},
		{"776e51696aca1f529ff6332e5648d3e", false},
		{"eui.776e51696aca1f529ff6332e5648d3e2", false},
		{"zz6e51696aca1f529ff6332e5648d3e2", false},
	}
	for _, tc := range tests {
		if got := ValidNGUID(tc.in); got != tc.ok {
			t.Errorf("ValidNGUID(%q) = %v, want %v", tc.in, got, tc.ok)
		}
	}
}

func TestParseIPAndPort(t *testing.T) {
	ips := []struct {
		in string
		ok bool
	}{
		{"127.0.0.1", true}, {"::1", true}, {"fd00::1:2", true},
		{"fe80::1%eth0", false}, {"localhost", false}, {"", false}, {"1.2.3.4,trsvcid=1", false}, {"256.1.1.1", false},
	}
	for _, tc := range ips {
		_, err := ParseIP("traddr", tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseIP(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
	ports := []struct {
		in string
		ok bool
	}{
		{"4420", true}, {"1", true}, {"65535", true},
		{"0", false}, {"65536", false}, {"-1", false}, {"04420", false}, {"+4420", false}, {"", false}, {"4420,x", false},
	}
	for _, tc := range ports {
		_, err := ParsePort("trsvcid", tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParsePort(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ParsePort(%q) = %v, want ErrInvalidArgument", tc.in, err)
		}
	}
}
