package nvmeof

import (
	"regexp"
	"testing"
)

func TestIdentityKnownValues(t *testing.T) {
	// Expected values computed independently (Python's uuid.uuid5 and
	// hashlib.sha1 with the same namespace and labels). They must never
	// change: replicas on disk are identified by them.
	tests := []struct {
		replica, uuid, nguid, serial string
	}{
		{"replica-1", "c5c46b1a-24ef-59e2-a67b-1b196c457a68", "776e51696aca1f529ff6332e5648d3e2", "00a73a40acba8021d8ae"},
	}
	for _, tc := range tests {
		if got := NamespaceUUID(tc.replica); got != tc.uuid {
			t.Errorf("NamespaceUUID(%q) = %s, want %s", tc.replica, got, tc.uuid)
		}
		if got := NamespaceNGUID(tc.replica); got != tc.nguid {
			t.Errorf("NamespaceNGUID(%q) = %s, want %s", tc.replica, got, tc.nguid)
		}
		if got := SerialFor(tc.replica); got != tc.serial {
			t.Errorf("SerialFor(%q) = %s, want %s", tc.replica, got, tc.serial)
		}
	}
	if got := NamespaceUUID("pvc-0001/r0"); got != "b318d812-f02d-5920-9493-db6385803b38" {
		t.Errorf("NamespaceUUID(pvc-0001/r0) = %s", got)
	}
}

func TestIdentityProperties(t *testing.T) {
	v5 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	hex20 := regexp.MustCompile(`^[0-9a-f]{20}$`)
	seen := map[string]string{}
	for _, r := range []string{"", "a", "b", "replica-1", "replica-2", "pvc-0001/r0", "pvc-0001/r1", "ünïcode"} {
		u, n, s := NamespaceUUID(r), NamespaceNGUID(r), SerialFor(r)
		if !v5.MatchString(u) || !IsUUID(u) {
			t.Errorf("NamespaceUUID(%q) = %q is not a version 5 UUID", r, u)
		}
		if !hex32.MatchString(n) || !ValidNGUID(n) {
			t.Errorf("NamespaceNGUID(%q) = %q is not 32 hex digits", r, n)
		}
		if !hex20.MatchString(s) || ValidateSerial(s) != nil {
			t.Errorf("SerialFor(%q) = %q is not 20 hex digits", r, s)
		}
		if NormalizeID(u) == n {
			t.Errorf("replica %q: UUID and NGUID share the same bytes", r)
		}
		for _, v := range []string{NormalizeID(u), n, s} {
			if prev, dup := seen[v]; dup {
				t.Errorf("identity %q of replica %q collides with replica %q", v, r, prev)
			}
			seen[v] = r
		}
		if NamespaceUUID(r) != u || NamespaceNGUID(r) != n || SerialFor(r) != s {
			t.Errorf("identities of %q are not stable", r)
		}
	}
}
