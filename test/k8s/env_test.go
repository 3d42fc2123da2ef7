package k8s

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRBACRefusalInLogs: a log watched for RBACRefusal reports the API
// server's refusal of a request, and not a validation error that also says
// Forbidden (the snapshot-controller logs one in a race with a deletion,
// and retries).
func TestRBACRefusalInLogs(t *testing.T) {
	e := &Env{t: t}
	log := filepath.Join(t.TempDir(), "snapshot-controller.log")
	p := &Process{Name: "snapshot-controller", LogPath: log}
	e.logChecks = append(e.logChecks, &logCheck{p: p, substr: strings.ToLower(RBACRefusal), meaning: "RBAC"})
	write := func(line string) {
		t.Helper()
		f, err := os.OpenFile(log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(line + "\n"); err != nil {
			t.Fatal(err)
		}
	}
	write(`E1205 21:51:36.091056   14840 snapshot_controller.go:206] error check and add Snapshot finalizers for snapshot [snapshot-tkn9z]: snapshot controller failed to update snapshottable-stress-7791/snapshot-tkn9z on API server: VolumeSnapshot.snapshot.storage.k8s.io "snapshot-tkn9z" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted`)
	if msg := e.scanLogs(); msg != "" {
		t.Errorf("a validation error taken for an RBAC refusal: %s", msg)
	}
	write(`E1205 10:00:00.000000       1 reflector.go:200] "Failed to watch" err="volumesnapshotcontents.snapshot.storage.k8s.io is forbidden: User \"system:serviceaccount:kube-system:snapshot-controller\" cannot list resource \"volumesnapshotcontents\" in API group \"snapshot.storage.k8s.io\" at the cluster scope"`)
	if msg := e.scanLogs(); !strings.Contains(msg, "cannot list resource") {
		t.Errorf("the RBAC refusal not reported: %q", msg)
	}
}
