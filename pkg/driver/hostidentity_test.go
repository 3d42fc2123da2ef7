package driver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadHostIdentityCreatesAndKeeps(t *testing.T) {
	root := t.TempDir()
	first, err := LoadHostIdentity(root)
	if err != nil {
		t.Fatal(err)
	}
	u, ok := strings.CutPrefix(first.NQN, uuidNQNPrefix)
	if !ok || !uuidPattern.MatchString(u) {
		t.Fatalf("created NQN %q is not of the uuid form", first.NQN)
	}
	if first.ID != u {
		t.Fatalf("host ID %q, want the NQN's UUID %q", first.ID, u)
	}
	again, err := LoadHostIdentity(root)
	if err != nil || again != first {
		t.Fatalf("second load %+v %v, want %+v", again, err, first)
	}
	b, _ := os.ReadFile(filepath.Join(root, hostNQNFile))
	if string(b) != first.NQN+"\n" {
		t.Fatalf("hostnqn file %q", b)
	}
	leftovers, _ := filepath.Glob(filepath.Join(root, "etc/nvme/.*tmp*"))
	if len(leftovers) > 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
}

func TestLoadHostIdentityExisting(t *testing.T) {
	tests := []struct {
		name, nqn, id string
		wantID        string // "" = random UUID expected
		wantErr       bool
	}{
		{name: "both present", nqn: "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee\n", id: "11111111-2222-4333-8444-555555555555\n", wantID: "11111111-2222-4333-8444-555555555555"},
		{name: "id derived from uuid NQN", nqn: "nqn.2014-08.org.nvmexpress:uuid:AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE", wantID: "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"},
		{name: "custom NQN gets a random id", nqn: "nqn.2024-01.com.example:host-7"},
		{name: "invalid NQN", nqn: "nqn.bad,hostnqn=evil", wantErr: true},
		{name: "invalid id", nqn: "nqn.2024-01.com.example:host-7", id: "not-a-uuid", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, filepath.Join(root, hostNQNFile), tt.nqn)
			if tt.id != "" {
				writeFile(t, filepath.Join(root, hostIDFile), tt.id)
			}
			h, err := LoadHostIdentity(root)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("accepted %+v", h)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.NQN != strings.TrimSpace(tt.nqn) {
				t.Fatalf("NQN %q rewritten", h.NQN)
			}
			if tt.wantID != "" && h.ID != tt.wantID {
				t.Fatalf("ID %q, want %q", h.ID, tt.wantID)
			}
			if !uuidPattern.MatchString(h.ID) {
				t.Fatalf("ID %q not a UUID", h.ID)
			}
		})
	}
}
