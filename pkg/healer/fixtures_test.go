package healer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// tree is a fixture root with sys/ and proc/ shaped like the kernel's, for
// n staged RAID1 volumes of three NVMe/TCP replicas each (the layout of
// pkg/mdraid/testdata/sysfs and pkg/nvmeof/host's sysfs tests).
type tree struct {
	tb     testing.TB
	root   string
	n      int
	staged []stagestate.Volume
	vols   map[string]*volume.Volume
}

func arrayUUID(i int) string { return fmt.Sprintf("8b298196:48aa4550:d7d4d20e:%08x", i) }

func (t *tree) write(rel, content string) {
	p := filepath.Join(t.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.tb.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
		t.tb.Fatal(err)
	}
}

func newTree(tb testing.TB, n int) *tree {
	t := &tree{tb: tb, root: tb.TempDir(), n: n, vols: map[string]*volume.Volume{}}
	var mdstat strings.Builder
	mdstat.WriteString("Personalities : [raid1] \n")
	for i := 0; i < n; i++ {
		md := fmt.Sprintf("md%d", i)
		volID := fmt.Sprintf("vol-%04d", i)
		vol := &volume.Volume{ID: volID, MDUUID: arrayUUID(i), Policy: storageclass.DefaultPolicy()}
		sv := stagestate.Volume{VolumeID: volID, Staged: true, MDDevice: "/dev/" + md, MDUUID: arrayUUID(i)}
		dir := "sys/block/" + md + "/md/"
		for f, v := range map[string]string{"array_state": "clean", "level": "raid1", "uuid": strings.ReplaceAll(arrayUUID(i), ":", ""),
			"raid_disks": "3", "degraded": "0", "sync_action": "idle", "sync_completed": "none", "mismatch_cnt": "0", "component_size": "39936"} {
			t.write(dir+f, v)
		}
		fmt.Fprintf(&mdstat, "%s : active raid1", md)
		for k := 0; k < 3; k++ {
			j := 3*i + k
			rid := fmt.Sprintf("%s-r%d", volID, k+1)
			nqn := "nqn.2026-01.io.nvmirror:" + rid
			ns := nvmeof.NamespaceUUID(rid)
			dev := fmt.Sprintf("nvme%dn1", j)
			t.write(fmt.Sprintf("%sdev-%s/state", dir, dev), "in_sync,failfast")
			t.write(fmt.Sprintf("%sdev-%s/slot", dir, dev), fmt.Sprint(k))
			t.write(fmt.Sprintf("%sdev-%s/errors", dir, dev), "0")
			t.write("sys/block/"+dev+"/uuid", ns)
			t.write("sys/block/"+dev+"/wwid", "uuid."+ns)
			c := fmt.Sprintf("sys/class/nvme/nvme%d/", j)
			t.write(c+"subsysnqn", nqn)
			t.write(c+"state", "live")
			t.write(c+"address", fmt.Sprintf("traddr=10.0.%d.1,trsvcid=4420,src_addr=10.1.0.1", k))
			vol.Replicas = append(vol.Replicas, volume.Replica{ID: rid, StorageNode: fmt.Sprintf("sn-%d", k+1), NQN: nqn, NamespaceUUID: ns,
				State: volume.ReplicaActive, Endpoints: []volume.Endpoint{{Address: fmt.Sprintf("10.0.%d.1", k), Port: "4420"}}})
			sv.Replicas = append(sv.Replicas, stagestate.Replica{ID: rid, NQN: nqn, NamespaceUUID: ns})
			fmt.Fprintf(&mdstat, " %s[%d]", dev, k)
		}
		mdstat.WriteString("\n      39936 blocks super 1.2 [3/3] [UUU]\n      bitmap: 0/1 pages [0KB], 65536KB chunk\n\n")
		t.staged = append(t.staged, sv)
		t.vols[volID] = vol
	}
	mdstat.WriteString("unused devices: <none>\n")
	t.write("proc/mdstat", mdstat.String())
	return t
}

// writeStagingStates writes each volume's staging state file (as NodeStage
// saves it) under the tree and returns the state directory.
func (t *tree) writeStagingStates() string {
	dir := filepath.Join(t.root, "state")
	for _, sv := range t.staged {
		st := stagestate.State{Version: 1, VolumeID: sv.VolumeID, Phase: stagestate.Staged, StagingPath: "/var/lib/kubelet/staging/" + sv.VolumeID,
			HostNQN: "nqn.host", MDDevice: sv.MDDevice, MDUUID: sv.MDUUID, Device: sv.MDDevice, Replicas: sv.Replicas, UpdatedAt: t0}
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			t.tb.Fatal(err)
		}
		t.write(filepath.Join("state", sv.VolumeID+".json"), string(b))
	}
	return dir
}

// ctrlState sets controller nvme<j>'s state; "" deletes it.
func (t *tree) ctrlState(j int, state string) {
	c := fmt.Sprintf("sys/class/nvme/nvme%d", j)
	if state == "" {
		if err := os.RemoveAll(filepath.Join(t.root, c)); err != nil {
			t.tb.Fatal(err)
		}
		return
	}
	t.write(c+"/state", state)
}

func (t *tree) memberState(i, k int, state string) {
	t.write(fmt.Sprintf("sys/block/md%d/md/dev-nvme%dn1/state", i, 3*i+k), state)
}

func (t *tree) observer(prov ConfigSource) *Observer {
	return &Observer{
		Staged:      func() ([]stagestate.Volume, error) { return t.staged, nil },
		Arrays:      mdraid.NewManager(nil, t.root),
		NVMe:        SysfsNVMe{Root: t.root},
		Provisioner: prov,
	}
}

// fakeProv is an in-memory provisioner.
type fakeProv struct {
	mu       sync.Mutex
	vols     map[string]*volume.Volume
	down     bool
	gets     int
	replaced map[string]volume.Replica
	marked   []string
	reports  [][]events.Event
	failNext int
	syncs    []string
}

func newFakeProv(vols map[string]*volume.Volume) *fakeProv {
	return &fakeProv{vols: vols, replaced: map[string]volume.Replica{}}
}

func (p *fakeProv) GetVolume(_ context.Context, id string) (*volume.Volume, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gets++
	if p.down {
		return nil, volume.ErrUnavailable
	}
	v, ok := p.vols[id]
	if !ok {
		return nil, volume.ErrNotFound
	}
	c := *v
	c.Replicas = append([]volume.Replica(nil), v.Replicas...)
	return &c, nil
}

func (p *fakeProv) ReplaceReplica(_ context.Context, volID, missing string) (*volume.Volume, *volume.Replica, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return nil, nil, volume.ErrUnavailable
	}
	if r, ok := p.replaced[volID+"/"+missing]; ok {
		return p.vols[volID], &r, nil
	}
	v := p.vols[volID]
	nr := volume.Replica{ID: missing + "-new", StorageNode: "sn-9", NQN: "nqn.2026-01.io.nvmirror:" + missing + "-new",
		NamespaceUUID: nvmeof.NamespaceUUID(missing + "-new"), State: volume.ReplicaActive,
		Endpoints: []volume.Endpoint{{Address: "10.0.9.1", Port: "4420"}}}
	for i := range v.Replicas {
		if v.Replicas[i].ID == missing {
			v.Replicas[i].State = volume.ReplicaRemoved
		}
	}
	v.Replicas = append(v.Replicas, nr)
	p.replaced[volID+"/"+missing] = nr
	return v, &nr, nil
}

func (p *fakeProv) MarkReplicaRemoved(_ context.Context, volID, id string) (*volume.Volume, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return nil, volume.ErrUnavailable
	}
	p.marked = append(p.marked, volID+"/"+id)
	return p.vols[volID], nil
}

func (p *fakeProv) ReportEvents(_ context.Context, rs ...events.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return volume.ErrUnavailable
	}
	if p.failNext > 0 {
		p.failNext--
		return errors.New("transient")
	}
	p.reports = append(p.reports, rs)
	return nil
}

func (p *fakeProv) delivered() []events.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []events.Event
	for _, b := range p.reports {
		out = append(out, b...)
	}
	return out
}

func (p *fakeProv) setDown(d bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = d
}

func removeFile(p string) error { return os.Remove(p) }

func (p *fakeProv) ReportReplicaSync(_ context.Context, volID, id string, inSync bool, at time.Time, events uint64, node string) (*volume.Volume, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return nil, volume.ErrUnavailable
	}
	v, ok := p.vols[volID]
	if !ok {
		return nil, volume.ErrNotFound
	}
	p.syncs = append(p.syncs, fmt.Sprintf("%s/%s in-sync=%v events=%d node=%s", volID, id, inSync, events, node))
	for i := range v.Replicas {
		if v.Replicas[i].ID != id {
			continue
		}
		if inSync {
			v.Replicas[i].OutOfSyncSince, v.Replicas[i].OutOfSyncAtEvents = time.Time{}, 0
		} else if v.Replicas[i].InSync() {
			v.Replicas[i].OutOfSyncSince, v.Replicas[i].OutOfSyncAtEvents = at, events
		}
	}
	return v, nil
}
