package driver_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// An array assembled without a replica takes writes it misses: the replica
// is recorded out of sync before the volume is mounted, once.
func TestStageRecordsReplicasTheArrayRunsWithout(t *testing.T) {
	e := newEnv(t)
	id := e.create("v", "3")
	e.publish(id)
	must(t, e.stage(id, mountCap))
	if r := e.prov.SyncReports(); len(r) != 0 {
		t.Fatalf("a whole array reported %+v", r)
	}
	must(t, e.unstage(id))

	away := e.volume(id).Replicas[2]
	e.fabric.SetDown(away.NQN, true)
	must(t, e.stage(id, mountCap))
	r := e.prov.SyncReports()
	if len(r) != 1 || r[0].ReplicaID != away.ID || r[0].InSync || r[0].NodeID != e.nodeID() {
		t.Fatalf("reports %+v, want replica %s out of sync from this node", r, away.ID)
	}
	for _, rep := range e.volume(id).Replicas {
		if rep.InSync() == (rep.ID == away.ID) {
			t.Errorf("replica %s: in sync %v", rep.ID, rep.InSync())
		}
	}
	must(t, e.stage(id, mountCap)) // a retry finds it recorded already
	if n := len(e.prov.SyncReports()); n != 1 {
		t.Errorf("%d reports after a retried stage, want 1", n)
	}
}

// The stale-leg sequence: B misses writes, the node goes, A is away and B
// is back. Starting the array from B alone would roll the volume back, so
// NodeStage refuses, says why and what to do, and leaves nothing behind;
// with A back it stages from both.
func TestStageRefusesStaleReplicasAlone(t *testing.T) {
	e := newEnv(t)
	id := e.create("v", "2")
	e.publish(id)
	must(t, e.stage(id, mountCap))
	must(t, e.unstage(id))
	v := e.volume(id)
	a, b := v.Replicas[0], v.Replicas[1]
	since := time.Date(2026, 12, 4, 9, 30, 0, 0, time.UTC)
	e.prov.Update(id, func(v *volume.Volume) { v.Replicas[1].OutOfSyncSince = since })
	e.fabric.SetDown(a.NQN, true)

	err := e.stage(id, mountCap)
	wantCode(t, err, codes.FailedPrecondition)
	msg := status.Convert(err).Message()
	for _, want := range []string{b.ID + " are out of sync since 2026-12-04T09:30:00Z", a.ID + " on storage nodes " + a.StorageNode,
		"nvmirrorctl promote " + id + " " + b.ID + " --accept-data-loss"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if len(e.raid.Arrays()) != 0 || len(e.ini.Connected()) != 0 || e.mounted(e.staging(id)) {
		t.Fatalf("refused stage left arrays %v, connections %v", e.raid.Arrays(), e.ini.Connected())
	}
	if _, err := os.Stat(filepath.Join(e.opts.StateDir, id+".json")); !os.IsNotExist(err) {
		t.Fatal("state left after a refused stage")
	}

	e.fabric.SetDown(a.NQN, false)
	must(t, e.stage(id, mountCap))
	arr, err := e.raid.ReadArray(filepath.Base(e.raid.Arrays()[0]))
	must(t, err)
	if len(arr.Members) != 2 {
		t.Fatalf("array %+v, want both replicas (md brings the stale one up to date)", arr)
	}
}

// The record comes before the writes: a provisioner that cannot record the
// missing replica fails the stage, and the array is stopped again.
func TestStageFailsWhenTheMissingReplicaCannotBeRecorded(t *testing.T) {
	e := newEnv(t)
	id := e.create("v", "2")
	e.publish(id)
	must(t, e.stage(id, mountCap))
	must(t, e.unstage(id))
	e.fabric.SetDown(e.volume(id).Replicas[1].NQN, true)
	e.prov.ReportSyncErr = errors.Join(volume.ErrUnavailable, errors.New("provisioner down"))
	wantCode(t, e.stage(id, mountCap), codes.Unavailable)
	if len(e.raid.Arrays()) != 0 || e.mounted(e.staging(id)) {
		t.Fatalf("failed stage left arrays %v", e.raid.Arrays())
	}
}

// An array already running (udev's incremental assembly, before NodeStage
// or racing its own assemble) is held to the same rule: one started from
// the stale replica alone is refused, whichever way it was found.
func TestStageRefusesAnArrayRunningOnStaleReplicasOnly(t *testing.T) {
	for _, race := range []bool{false, true} {
		e := newEnv(t)
		id := e.create("v", "2")
		e.publish(id)
		must(t, e.stage(id, mountCap))
		must(t, e.unstage(id))
		v := e.volume(id)
		e.prov.Update(id, func(v *volume.Volume) { v.Replicas[1].OutOfSyncSince = time.Now() })
		// The stale replica's controller, connected (as a previous stage
		// left it), for udev to find its namespace.
		_, err := e.ini.Connect(context.Background(), host.ConnectOptions{Transport: "tcp",
			TrAddr: v.Replicas[1].Endpoints[0].Address, TrSvcID: v.Replicas[1].Endpoints[0].Port,
			SubsysNQN: v.Replicas[1].NQN, HostNQN: v.PublishedHost, HostID: "5a0d1f7e-0000-4000-8000-000000000001"})
		must(t, err)
		dev, err := e.ini.FindDevice(v.Replicas[1].NQN, v.Replicas[1].NamespaceID())
		must(t, err)
		udev := func() { must(t, e.raid.Assemble(context.Background(), "/dev/md100", v.MDUUID, []string{dev.Path})) }
		if race {
			e.raid.BeforeAssemble = udev
		} else {
			udev()
		}
		err = e.stage(id, mountCap)
		wantCode(t, err, codes.FailedPrecondition)
		if msg := status.Convert(err).Message(); !strings.Contains(msg, v.Replicas[1].ID+" are out of sync") {
			t.Errorf("race=%v: message %q does not name the stale replica", race, msg)
		}
		if e.mounted(e.staging(id)) || len(e.prov.SyncReports()) != 0 {
			t.Errorf("race=%v: mounted %v, reports %+v", race, e.mounted(e.staging(id)), e.prov.SyncReports())
		}
	}
}

// A replica a promotion gave up is never connected or assembled: md could
// pick it (its event count may be the highest) and serve the data the
// promotion gave up. It stays in the staging record, so the healer counts it
// missing and replaces it.
func TestStageLeavesOutADivergedReplica(t *testing.T) {
	e := newEnv(t)
	id := e.create("v", "3")
	e.publish(id)
	must(t, e.stage(id, mountCap))
	must(t, e.unstage(id))
	v := e.volume(id)
	gaveUp := v.Replicas[0]
	at := time.Date(2026, 12, 4, 9, 30, 0, 0, time.UTC)
	e.prov.Update(id, func(v *volume.Volume) { v.Replicas[0].OutOfSyncSince, v.Replicas[0].DivergedSince = at, at })

	must(t, e.stage(id, mountCap))
	if slices.Contains(e.ini.Connected(), gaveUp.NQN) || len(e.ini.Connected()) != 2 {
		t.Fatalf("connected %v: want the two replicas other than the diverged %s", e.ini.Connected(), gaveUp.NQN)
	}
	arr, err := e.raid.ReadArray(filepath.Base(e.raid.Arrays()[0]))
	must(t, err)
	if len(arr.Members) != 2 {
		t.Fatalf("array %+v, want the two other replicas", arr)
	}
	st, err := stagestate.New(e.opts.StateDir).Load(id)
	must(t, err)
	var staged []string
	for _, r := range st.Replicas {
		staged = append(staged, r.ID)
	}
	if !slices.Contains(staged, gaveUp.ID) {
		t.Errorf("staging record %v lacks the diverged replica: the healer would not replace it", staged)
	}
}

// A replica the provisioner reserved but has not created (a move or
// replacement in its first step, or left so by a crash) has no NQN: NodeStage
// connects the others and NodeUnstage does not trip over it (found on the
// real kernel: NodeUnstage failed "NQN \"\" must start with nqn.").
func TestStageAndUnstageSkipAReplicaNotCreatedYet(t *testing.T) {
	e := newEnv(t)
	id := e.create("v", "2")
	e.publish(id)
	e.prov.Update(id, func(v *volume.Volume) {
		v.Replicas = append(v.Replicas, volume.Replica{ID: "rep-reserved", StorageNode: "sn-9", State: volume.ReplicaActive, OutOfSyncSince: time.Now()})
	})
	must(t, e.stage(id, mountCap))
	if n := len(e.ini.Connected()); n != 2 {
		t.Fatalf("connected %v, want the two created replicas", e.ini.Connected())
	}
	must(t, e.unstage(id))
	if len(e.ini.Connected()) != 0 {
		t.Fatalf("connections left: %v", e.ini.Connected())
	}
}

// The replicas a freeze reports: those whose device md holds in sync, by
// NodeStage's own mapping from the staging record; a member md failed and
// a replica whose controller is gone are left out.
func TestStagedInSyncReplicas(t *testing.T) {
	e := newEnv(t)
	id := e.create("v", "3")
	e.publish(id)
	must(t, e.stage(id, mountCap))
	vols, err := stagestate.ListVolumes(e.opts.StateDir)
	must(t, err)
	if len(vols) != 1 || vols[0].MDDevice == "" {
		t.Fatalf("staged %+v, want one volume with an array", vols)
	}
	sv := vols[0]
	name := strings.TrimPrefix(sv.MDDevice, "/dev/")
	read := func() []string {
		a, err := e.raid.ReadArray(name)
		must(t, err)
		got := e.drv.StagedInSyncReplicas(sv, a)
		slices.Sort(got)
		return got
	}
	var all []string
	for _, r := range e.volume(id).Replicas {
		all = append(all, r.ID)
	}
	slices.Sort(all)
	if got := read(); !slices.Equal(got, all) {
		t.Fatalf("whole array: %v, want %v", got, all)
	}

	v := e.volume(id)
	failed, gone := v.Replicas[0], v.Replicas[1]
	dev, err := e.ini.FindDevice(failed.NQN, "")
	must(t, err)
	e.raid.Update(sv.MDDevice, func(a *mdraid.Array) {
		for i := range a.Members {
			if a.Members[i].Device == dev.Name {
				a.Members[i].State = mdraid.ParseMemberState("faulty")
			}
		}
	})
	must(t, e.ini.DisconnectNQN(context.Background(), gone.NQN))
	if got := read(); !slices.Equal(got, []string{v.Replicas[2].ID}) {
		t.Fatalf("one member failed, one replica disconnected: %v, want only %s", got, v.Replicas[2].ID)
	}
}
