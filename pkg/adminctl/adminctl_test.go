package adminctl

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	api "github.com/nvmirror/nvmirror/pkg/provisionerapi"
)

func TestParseSet(t *testing.T) {
	id, params, err := parseSet([]string{"vol-1", "maxReplicaDownTime=120"})
	if err != nil || id != "vol-1" || params["maxReplicaDownTime"] != "120" {
		t.Fatalf("parseSet = %q %v %v", id, params, err)
	}
	for _, bad := range [][]string{{"vol-1"}, {"vol-1", "maxReplicaDownTime"}, {"vol-1", "=3"}} {
		if _, _, err := parseSet(bad); err == nil {
			t.Errorf("parseSet(%q) accepted", bad)
		}
	}
}

func TestParseEventsFlags(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	req, err := parseEventsFlags([]string{"--volume", "vol-1", "--type", "VolumeDegraded", "--since", "90m", "--limit", "5"}, now, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if req.GetVolumeId() != "vol-1" || req.GetType() != "VolumeDegraded" || req.GetLimit() != 5 || !req.GetSince().AsTime().Equal(now.Add(-90*time.Minute)) {
		t.Fatalf("request %v", req)
	}
	if _, err := parseEventsFlags([]string{"--since", "yesterday"}, now, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--since") {
		t.Errorf("bad --since: %v", err)
	}
	if _, err := parseEventsFlags([]string{"--limit", "-1"}, now, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--limit") {
		t.Errorf("negative --limit: %v", err)
	}
}

func testVolume(now time.Time) *api.Volume {
	return &api.Volume{
		Id: "vol-1", Name: "pvc-123", SizeBytes: 1 << 30, State: "ready", MdName: "vol-1", MdUuid: "a:b:c:d",
		PublishedNodeId: "worker-1/nqn.host", DegradedSince: timestamppb.New(now.Add(-2 * time.Minute)),
		Parameters: map[string]string{"numReplicas": "3", "maxReplicaDownTime": "60"},
		Metadata:   map[string]string{"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "db", "csi.storage.k8s.io/pv/name": "pvc-123"},
		Replicas: []*api.Replica{
			{Id: "r1", StorageNode: "sn1", State: api.ReplicaState_REPLICA_STATE_ACTIVE, Endpoints: []*api.Endpoint{{Address: "10.0.0.1", Port: "4420"}}},
			{Id: "r2", StorageNode: "sn2", State: api.ReplicaState_REPLICA_STATE_ACTIVE,
				OutOfSyncSince: timestamppb.New(now.Add(-time.Hour)), OutOfSyncAtEvents: 42},
			{Id: "r3", StorageNode: "sn3", State: api.ReplicaState_REPLICA_STATE_DELETED},
			{Id: "r0", StorageNode: "sn4", State: api.ReplicaState_REPLICA_STATE_REMOVED},
		},
	}
}

func TestRenderVolumes(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	renderVolumes(&b, []*api.Volume{testVolume(now)}, now)
	out := b.String()
	for _, want := range []string{"VOLUME", "PVC", "PV ", "DEGRADED SINCE", "vol-1", "db/data", "pvc-123", "1Gi", "2/3", "ready", "2026-11-21T11:58:00Z (2m0s ago)", "worker-1/nqn.host"} {
		if !strings.Contains(out, want) {
			t.Errorf("volumes table lacks %q:\n%s", want, out)
		}
	}
}

func TestRenderVolume(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	nodes := map[string]*api.StorageNode{"sn1": {Name: "sn1", Zone: "z1", Rack: "rack-a"}}
	evs := []*api.Event{
		{Type: "VolumeDegraded", Severity: api.Severity_SEVERITY_FATAL, Time: timestamppb.New(now), VolumeId: "vol-1", StorageNodes: []string{"sn3"}, Message: "1 of 3 replicas missing"},
		{Type: "Audit", Severity: api.Severity_SEVERITY_INFO, Time: timestamppb.New(now), VolumeId: "vol-1", Node: "worker-1",
			Attributes: map[string]string{api.AttrOperation: "NodeStageVolume", api.AttrOutcome: "OK"}},
	}
	var b bytes.Buffer
	renderVolume(&b, testVolume(now), nodes, evs, now)
	out := b.String()
	for _, want := range []string{"SYNC", "in sync", "out of sync since 2026-11-21T11:00:00Z (md events 42)",
		"Replicas:", "2 active of 3", "maxReplicaDownTime=60 numReplicas=3", "rack-a", "10.0.0.1:4420", "deleted", "removed", "VolumeDegraded", "fatal", "1 of 3 replicas missing", "NodeStageVolume OK worker-1"} {
		if !strings.Contains(out, want) {
			t.Errorf("volume view lacks %q:\n%s", want, out)
		}
	}
}

func TestRenderVolumeOfflineRepair(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	v := testVolume(now)
	var b bytes.Buffer
	renderVolume(&b, v, nil, nil, now)
	if !strings.Contains(b.String(), "Offline repair:  -") {
		t.Errorf("no repair shown as -:\n%s", b.String())
	}
	v.Repair = &api.OfflineRepair{RepairId: "rpr-1", StorageNode: "sn3", ReplicaIds: []string{"r2"}, Started: timestamppb.New(now.Add(-time.Minute))}
	b.Reset()
	renderVolume(&b, v, nil, nil, now)
	if want := "rpr-1 on sn3 for r2, since 2026-11-21T11:59:00Z (1m0s ago)"; !strings.Contains(b.String(), want) {
		t.Errorf("volume view lacks %q:\n%s", want, b.String())
	}
}

func TestRenderJSON(t *testing.T) {
	var b bytes.Buffer
	if err := renderJSON(&b, &api.Volume{Id: "vol-1", SizeBytes: 5}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"id": "vol-1"`) || !strings.Contains(b.String(), `"sizeBytes": "5"`) {
		t.Fatalf("json %s", b.String())
	}
}

func TestRenderVolumeSyncPerReplica(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	renderVolume(&b, testVolume(now), nil, nil, now)
	rows := map[string]string{}
	for _, line := range strings.Split(b.String(), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			rows[f[0]] = line
		}
	}
	for id, want := range map[string]string{"r1": "in sync", "r2": "out of sync since 2026-11-21T11:00:00Z (md events 42)"} {
		if !strings.Contains(rows[id], want) {
			t.Errorf("replica %s row %q lacks %q", id, rows[id], want)
		}
	}
	// A replica on its way out makes no claim about its data.
	for _, id := range []string{"r3", "r0"} {
		if strings.Contains(rows[id], "sync") {
			t.Errorf("replica %s row shows a sync state: %q", id, rows[id])
		}
	}
}

func TestParsePromote(t *testing.T) {
	for _, args := range [][]string{
		{"vol-1", "r1", "r2", "--accept-data-loss", "--reason", "fire"},
		{"--accept-data-loss", "vol-1", "r1", "--reason=fire", "r2"},
	} {
		pa, err := parsePromote(args, &bytes.Buffer{})
		if err != nil || pa.volumeID != "vol-1" || strings.Join(pa.replicaIDs, ",") != "r1,r2" || !pa.acceptDataLoss || pa.reason != "fire" {
			t.Errorf("parsePromote(%q) = %+v, %v", args, pa, err)
		}
	}
	pa, err := parsePromote([]string{"vol-1", "r1"}, &bytes.Buffer{})
	if err != nil || pa.acceptDataLoss {
		t.Errorf("without the flag: %+v, %v", pa, err)
	}
	var ue UsageError
	for _, bad := range [][]string{{"vol-1"}, {"vol-1", "--accept-data-loss"}, {"vol-1", "r1", "--force"}} {
		if _, err := parsePromote(bad, &bytes.Buffer{}); !errors.As(err, &ue) {
			t.Errorf("parsePromote(%q) = %v, want a usage error", bad, err)
		}
	}
}

func TestPromoteRefusalSaysWhatIsLost(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	v := testVolume(now)
	err := promoteRefusal(promoteArgs{volumeID: "vol-1", replicaIDs: []string{"r2", "r1", "r3", "rx"}}, v)
	var ue UsageError
	if !errors.As(err, &ue) {
		t.Fatalf("refusal %v is not a usage error", err)
	}
	for _, want := range []string{"--accept-data-loss", "vol-1", "r2 (out of sync since 2026-11-21T11:00:00Z (md events 42))", "r1 (in sync)",
		"r3 (deleted, not active)", "rx (not a replica of this volume)",
		"acknowledged while these replicas were out of sync, since 2026-11-21T11:00:00Z", "nothing was changed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal lacks %q: %v", want, err)
		}
	}
	// Without the volume (it could not be read), still refused, naming the flag.
	if err := promoteRefusal(promoteArgs{volumeID: "vol-1", replicaIDs: []string{"r2"}}, nil); err == nil || !strings.Contains(err.Error(), "--accept-data-loss") {
		t.Errorf("refusal without the volume: %v", err)
	}
}

// What the provisioner stores comes from nodes and claims; an escape
// sequence or a newline in it must not drive the admin's terminal or forge
// a table row: control characters are printed escaped (\xNN).
func TestRenderEscapesControlCharacters(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	const bad = "x\x1b[2J\nFORGED\r\t\x07"
	evs := []*api.Event{
		{Type: "VolumeDegraded" + bad, Time: timestamppb.New(now), VolumeId: "vol-1" + bad, StorageNodes: []string{"sn3" + bad}, Message: "missing" + bad},
		{Type: "Audit", Time: timestamppb.New(now), VolumeId: "vol-1", Node: "worker-1" + bad,
			Attributes: map[string]string{api.AttrOperation: "NodeStageVolume" + bad, api.AttrOutcome: "OK" + bad}, Message: bad},
	}
	v := testVolume(now)
	v.Name, v.Metadata["csi.storage.k8s.io/pvc/name"], v.Parameters["fsType"+bad] = "pvc"+bad, "data"+bad, bad
	v.Replicas[0].StorageNode, v.Replicas[0].Id = "sn1"+bad, "r1"+bad
	var b bytes.Buffer
	renderEvents(&b, evs)
	renderVolume(&b, v, nil, evs, now)
	renderVolumes(&b, []*api.Volume{v}, now)
	renderNodes(&b, []*api.StorageNode{{Name: "sn1" + bad, ApiAddress: "a" + bad, Zone: "z" + bad, Rack: "r" + bad}})
	out := b.String()
	for i, c := range out {
		if (c < 0x20 && c != '\n') || c == 0x7f {
			t.Fatalf("control character %U at %d:\n%q", c, i, out)
		}
	}
	if strings.Contains(out, "\nFORGED") {
		t.Errorf("a newline in a field started a line:\n%s", out)
	}
	if !strings.Contains(out, `missingx\x1b[2J\x0aFORGED\x0d\x09\x07`) {
		t.Errorf("escaped message missing:\n%s", out)
	}
}

// A replica a promotion gave up shows as such, not as an ordinary stale one.
func TestRenderVolumeDivergedReplica(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	v := testVolume(now)
	v.Replicas[1].DivergedSince = timestamppb.New(now.Add(-30 * time.Minute))
	var b bytes.Buffer
	renderVolume(&b, v, nil, nil, now)
	if want := "diverged since 2026-11-21T11:30:00Z (given up by a promotion)"; !strings.Contains(b.String(), want) {
		t.Errorf("volume view lacks %q:\n%s", want, b.String())
	}
}

func TestRenderSnapshots(t *testing.T) {
	now := time.Date(2026, 12, 5, 2, 0, 0, 0, time.UTC)
	s := &api.Snapshot{Id: "snap-1", Name: "daily\x1b[31m", SourceVolumeId: "vol-1", SizeBytes: 16 << 30, State: "ready", ReadyToUse: true, WantCopies: 3,
		Created: timestamppb.New(now.Add(-90 * time.Second)),
		Copies: []*api.SnapshotCopy{
			{StorageNode: "sn-1", State: "ready", AllocatedBytes: 64 << 20, Reflinked: true},
			{StorageNode: "sn-2", State: "ready", AllocatedBytes: 64 << 20, Reflinked: true},
			{StorageNode: "sn-3", State: "cutting"},
		}}
	var b strings.Builder
	renderSnapshots(&b, []*api.Snapshot{s}, now)
	out := b.String()
	for _, want := range []string{"snap-1", "vol-1", "16Gi", "128Mi", "2/3", "ready", "(1m30s ago)"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	renderSnapshot(&b, s, now)
	out = b.String()
	for _, want := range []string{"sn-1", "sn-3", "cutting", "64Mi", "2/3 complete", "true"} {
		if !strings.Contains(out, want) {
			t.Errorf("detail lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("control characters reach the terminal: %q", out)
	}
}
