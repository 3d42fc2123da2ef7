//go:build vmguest

package kernel

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
)

// storageNode is one simulated storage node: its own loopback address and
// nvmet port exporting one replica (a subsystem with one file-backed
// namespace), as nvmirror-target will lay it out.
type storageNode struct {
	portID  int
	addr    string
	svcID   string
	nqn     string
	nsUUID  string
	backing string
}

// hostIdentity is the compute node's NVMe host identity.
type hostIdentity struct {
	nqn, id string
}

func newHostIdentity(t *testing.T, n int) hostIdentity {
	t.Helper()
	id := fmt.Sprintf("6b1d8e3c-0000-4000-8000-%012d", n)
	return hostIdentity{nqn: "nqn.2014-08.org.nvmexpress:uuid:" + id, id: id}
}

// startStorageNodes exports one replica of sizeBytes per node on 127.0.0.(2+i)
// and allows only host to connect.
func startStorageNodes(t *testing.T, tgt *nvmet.Target, prefix string, count int, sizeBytes int64, hostIdent hostIdentity, firstPort int) []storageNode {
	t.Helper()
	return startStorageNodesAt(t, tgt, prefix, count, sizeBytes, hostIdent, firstPort, 2)
}

// startStorageNodesAt is startStorageNodes with the nodes on
// 127.0.0.(firstAddr+i), for several sets of nodes at once.
func startStorageNodesAt(t *testing.T, tgt *nvmet.Target, prefix string, count int, sizeBytes int64, hostIdent hostIdentity, firstPort, firstAddr int) []storageNode {
	t.Helper()
	if err := tgt.Available(); err != nil {
		t.Fatalf("nvmet not available: %v", err)
	}
	var nodes []storageNode
	for i := 0; i < count; i++ {
		replicaID := fmt.Sprintf("%s-r%d", prefix, i)
		n := storageNode{
			portID:  firstPort + i,
			addr:    fmt.Sprintf("127.0.0.%d", firstAddr+i),
			svcID:   "4420",
			nqn:     "nqn.2026-11.io.nvmirror:replica:" + replicaID,
			nsUUID:  nvmeof.NamespaceUUID(replicaID),
			backing: filepath.Join("/var/lib", replicaID+".img"),
		}
		f, err := os.Create(n.backing)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(sizeBytes); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := tgt.EnsureSubsystem(n.nqn, nvmeof.SerialFor(replicaID)); err != nil {
			t.Fatalf("EnsureSubsystem %s: %v", n.nqn, err)
		}
		// The VM's root is a RAM filesystem without O_DIRECT: file-backed
		// namespaces need buffered I/O there (a real pool directory on ext4 or
		// xfs does not).
		ns := nvmet.Namespace{NSID: 1, DevicePath: n.backing, UUID: n.nsUUID, NGUID: nvmeof.NamespaceNGUID(replicaID), BufferedIO: true}
		if err := tgt.EnsureNamespace(n.nqn, ns); err != nil {
			t.Fatalf("EnsureNamespace %s: %v", n.nqn, err)
		}
		if err := tgt.AllowHost(n.nqn, hostIdent.nqn); err != nil {
			t.Fatalf("AllowHost: %v", err)
		}
		if err := tgt.EnsurePort(nvmet.Port{ID: n.portID, Transport: "tcp", TrAddr: n.addr, TrSvcID: n.svcID}); err != nil {
			t.Fatalf("EnsurePort %d: %v", n.portID, err)
		}
		if err := tgt.LinkSubsystem(n.portID, n.nqn); err != nil {
			t.Fatalf("LinkSubsystem: %v", err)
		}
		nodes = append(nodes, n)
	}
	t.Cleanup(func() {
		if err := tgt.Teardown("nqn.2026-11.io.nvmirror:replica:" + prefix); err != nil {
			t.Errorf("target teardown: %v", err)
		}
		for _, n := range nodes {
			os.Remove(n.backing)
		}
	})
	return nodes
}

func intp(v int) *int { return &v }

// connectOptions are the initiator settings nvmirror uses: a short
// fast_io_fail_tmo so md fails a lost leg within about a second instead of
// the whole array freezing on queued I/O; ctrl_loss_tmo kept short here so
// the test sees the controller deleted and reconnects it like the healer will.
func (n storageNode) connectOptions(h hostIdentity) host.ConnectOptions {
	return host.ConnectOptions{
		Transport: "tcp", TrAddr: n.addr, TrSvcID: n.svcID, SubsysNQN: n.nqn,
		HostNQN: h.nqn, HostID: h.id,
		CtrlLossTmo: intp(5), ReconnectDelay: intp(1), FastIOFailTmo: intp(1), KeepAliveTmo: intp(5),
	}
}

// waitFor polls cond until it holds or the deadline passes; cond returns a
// description of what it saw, reported on timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	var last string
	for {
		ok, seen := cond()
		if ok {
			return time.Since(start)
		}
		last = seen
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last seen: %s", timeout, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// writeFiles writes count files of size random bytes under dir, each fsynced,
// and returns their SHA-256 sums by path.
func writeFiles(t *testing.T, dir, prefix string, count, size int) map[string]string {
	t.Helper()
	sums := map[string]string{}
	buf := make([]byte, size)
	for i := 0; i < count; i++ {
		if _, err := rand.Read(buf); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, fmt.Sprintf("%s-%03d.bin", prefix, i))
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(buf); err != nil {
			t.Fatalf("write %s: %v", p, err)
		}
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync %s: %v", p, err)
		}
		f.Close()
		sum := sha256.Sum256(buf)
		sums[p] = hex.EncodeToString(sum[:])
	}
	return sums
}

func verifyFiles(t *testing.T, sums map[string]string) {
	t.Helper()
	for p, want := range sums {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("read %s: %v", p, err)
			continue
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("%s: checksum %s, want %s", p, got, want)
		}
	}
}

// dropCaches makes the next reads come from the devices, not the page cache.
func dropCaches(t *testing.T) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		t.Fatalf("drop caches: %v", err)
	}
}

// writeSectors reads the sectors written to a block device so far. An NVMe
// multipath head (nvme<S>n<N>) does no I/O accounting on 6.1 kernels; its
// per-controller paths (nvme<S>c<C>n<N>) do, so their sum is used.
func writeSectors(t *testing.T, dev string) uint64 {
	t.Helper()
	var paths []string
	if m := regexp.MustCompile(`^nvme(\d+)n(\d+)$`).FindStringSubmatch(dev); m != nil {
		paths, _ = filepath.Glob(filepath.Join("/sys/block", "nvme"+m[1]+"c*n"+m[2]))
	}
	if len(paths) == 0 {
		return statWriteSectors(t, dev)
	}
	var total uint64
	for _, p := range paths {
		total += statWriteSectors(t, filepath.Base(p))
	}
	return total
}

func statWriteSectors(t *testing.T, dev string) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/block", dev, "stat"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) < 7 {
		t.Fatalf("/sys/block/%s/stat: %q", dev, b)
	}
	v, err := strconv.ParseUint(f[6], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mergeSums(maps ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range maps {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
