package k8s

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/test/vm"
)

// The storage nodes run in a VM: nvmirror-target exports replicas through
// the kernel NVMe target (nvmet), which this host's kernel does not have.
// Everything else runs on the host and reaches the agents' gRPC API through
// ports qemu forwards to 127.0.0.1.

const (
	// storageNodeCount agents, each in its own zone and rack, so that a
	// three-replica volume fits with the default sameRackAllowed=false.
	storageNodeCount = 3
	// storagePoolBytes is each agent's pool: a tmpfs of that size in the
	// guest. Thin replicas are sparse and cost nothing until written, but
	// a thick one is fallocated: it takes its whole size in guest memory.
	// 4 GiB: the external storage suite's volume-expand specs ask for 1 GiB
	// and grow it by another (a 1 GiB pool refused them, ResourceExhausted:
	// a replica is the volume plus md's metadata reserve).
	storagePoolBytes = 4 << 30
	// e2eClaimBytes caps the example claim's size (the resize step
	// doubles it): three thick replicas of twice this fit the VM's memory.
	e2eClaimBytes = 64 << 20
	// agentAPIPortBase: agent i (from 1) serves gRPC on guest port base+i.
	agentAPIPortBase = 9400
)

// storageNodePortID is the nvmet port (configfs ports/<id>) agent i (from
// 1) exports its replicas on: a test cuts a replica off by unlinking its
// subsystem from that port, as a storage node's network loss would.
func storageNodePortID(i int) int { return i }

// storageVM is the service VM running the agents.
type storageVM struct {
	svc   *vm.Service
	nodes []storageNode
}

// guestCredentials is where the CA and each agent's certificate and key
// are in the guest.
const guestCredentials = "/nvmirror/tls"

// storageNodesGuest is the guest side of the storage nodes: the script
// that starts three agents on 127.0.0.2-4 inside the guest (NVMe/TCP), their
// gRPC APIs on the guest's NIC (agentAPIPortBase+i), the files it needs
// (the credentials) and the guest ports to forward to the host.
func storageNodesGuest(t *testing.T, creds credentials) (script string, files map[string]string, forward []int) {
	t.Helper()
	var b strings.Builder
	for i := 1; i <= storageNodeCount; i++ {
		name := fmt.Sprintf("sn%d", i)
		port := agentAPIPortBase + i
		forward = append(forward, port)
		pool := "/run/nvmirror/" + name + "/pool"
		// Each agent's output goes to the VM's output, prefixed with its
		// name: the service VM's report shows it when the test fails.
		fmt.Fprintf(&b, `mkdir -p %[3]s
mount -t tmpfs -o size=%[4]d tmpfs %[3]s
nvmirror-target --node-name=%[1]s --zone=zone-%[1]s --rack=rack-%[1]s \
  --pool-dir=%[3]s --nqn-prefix=nqn.2026-11.io.nvmirror:%[1]s: \
  --nvme-address=127.0.0.%[2]d:4430 --nvme-port-id=%[5]d \
  --listen=%[6]s:%[7]d \
  --tls-cert-file=%[8]s/%[1]s.crt --tls-key-file=%[8]s/%[1]s.key --tls-client-ca-file=%[8]s/ca.crt \
  --shutdown-timeout=5s -v=2 2>&1 | sed 's/^/%[1]s: /' &
`, name, i+1, pool, storagePoolBytes, storageNodePortID(i), vm.GuestIP, port, guestCredentials)
		t.Logf("storage node %s: NVMe/TCP 127.0.0.%d:4430 in the VM, gRPC guest port %d", name, i+1, port)
	}
	files = map[string]string{guestCredentials + "/ca.crt": creds.CA}
	for name, p := range creds.StorageNodes {
		files[guestCredentials+"/"+name+".crt"] = p.Cert
		files[guestCredentials+"/"+name+".key"] = p.Key
	}
	return b.String(), files, forward
}

// bootStorageNodes builds nvmirror-target into a VM image with the test's
// credentials and boots it (storageNodesGuest).
func bootStorageNodes(t *testing.T, creds credentials) *storageVM {
	t.Helper()
	agents, files, forward := storageNodesGuest(t, creds)
	script := "set -e\n" + agents
	svc := vm.StartService(t, vm.ServiceConfig{
		// The 6.12 kernel: its target does NVMe in-band authentication,
		// which the authenticated example class needs.
		KernelDir: vm.AuthKernelDir,
		Commands:  []string{"./cmd/nvmirror-target"},
		Files:     files,
		Script:    script,
		Forward:   forward,
	})
	return &storageVM{svc: svc, nodes: storageNodesOf(svc)}
}

// storageNodesOf are the storage nodes of storageNodesGuest in the VM svc,
// as the host reaches them.
func storageNodesOf(svc *vm.Service) []storageNode {
	var nodes []storageNode
	for i := 1; i <= storageNodeCount; i++ {
		name := fmt.Sprintf("sn%d", i)
		nodes = append(nodes, storageNode{
			Name: name, Zone: "zone-" + name, Rack: "rack-" + name,
			API: svc.HostAddr(agentAPIPortBase + i),
		})
	}
	return nodes
}

// wait returns the storage nodes once every agent answers NodeInfo through
// its forwarded port with the identity it was given. (The agents serve
// only after restoring their exports, so an answer means ready.)
func (s *storageVM) wait(t *testing.T, e *Env, creds credentials) []storageNode {
	t.Helper()
	ag := dialAgents(t, s.nodes, creds)
	for _, n := range s.nodes {
		e.WaitFor(time.Minute, "agent "+n.Name+" to answer on "+n.API, func() (bool, string) {
			select {
			case <-s.svc.Exited():
				t.Fatalf("the storage VM exited")
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			info, err := ag[n.Name].NodeInfo(ctx, &agentapi.NodeInfoRequest{})
			if err != nil {
				return false, err.Error()
			}
			if info.GetNodeName() != n.Name || info.GetZone() != n.Zone || info.GetRack() != n.Rack {
				t.Fatalf("%s answers as node %q zone %q rack %q", n.API, info.GetNodeName(), info.GetZone(), info.GetRack())
			}
			return true, ""
		})
	}
	return s.nodes
}
