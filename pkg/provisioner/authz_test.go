package provisioner_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/rpcauth/rpcauthtest"
)

// authzEnv serves e's provisioner over mutual TLS with the provisioner's
// authorization, and dials it as any caller.
type authzEnv struct {
	*env
	ca   *rpcauthtest.CA
	addr string
}

func newAuthzEnv(t *testing.T) *authzEnv {
	t.Helper()
	e := newEnv(t, threeRacks())
	ca := rpcauthtest.NewCA(t)
	dir := t.TempDir()
	crt, key := ca.Server(t, "nvmirror-provisioner").WriteNamed(t, dir, "server")
	s, err := rpcauth.NewServer(rpcauth.ServerConfig{CertFile: crt, KeyFile: key, ClientCAFile: ca.WriteCA(t, dir),
		Authorizer: provisioner.NewAuthorizer(e.store)})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(s.ServerOptions()...)
	provisionerapi.RegisterProvisionerServer(srv, provisioner.NewServer(e.svc))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return &authzEnv{env: e, ca: ca, addr: lis.Addr().String()}
}

// as returns the API as the caller name with roles.
func (a *authzEnv) as(t *testing.T, name string, roles ...string) provisionerapi.ProvisionerClient {
	t.Helper()
	c := a.ca.Client(t, name, roles...)
	cfg := c.ClientTLS()
	cfg.ServerName = "localhost"
	cfg.Certificates = []tls.Certificate{c.TLS}
	conn, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return provisionerapi.NewProvisionerClient(conn)
}

// TestAuthorization drives the provisioner's API as each kind of caller:
// node plugins only for their own node (volumes published to it, their own
// host's secrets, events naming themselves), the controller's and the
// administrator's calls refused to nodes, nothing for the provisioner's or
// a storage node's certificate.
func TestAuthorization(t *testing.T) {
	a := newAuthzEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	controller := a.as(t, "nvmirror-controller", "controller")
	w1 := a.as(t, "worker-1", "node")
	w2 := a.as(t, "worker-2", "node")
	ops := a.as(t, "ops", "admin")
	prov := a.as(t, "nvmirror-provisioner", "provisioner")

	created, err := controller.CreateVolume(ctx, &provisionerapi.CreateVolumeRequest{Name: "pvc-1", SizeBytes: gib,
		Parameters: map[string]string{"numReplicas": "2", "authentication": "host"}})
	if err != nil {
		t.Fatal(err)
	}
	v := created.GetVolume()
	if _, err := controller.PublishVolume(ctx, &provisionerapi.PublishVolumeRequest{VolumeId: v.GetId(), HostNqn: hostA, NodeId: "worker-1/" + hostA}); err != nil {
		t.Fatal(err)
	}
	other, err := controller.CreateVolume(ctx, &provisionerapi.CreateVolumeRequest{Name: "pvc-2", SizeBytes: gib,
		Parameters: map[string]string{"numReplicas": "2", "authentication": "host"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := controller.PublishVolume(ctx, &provisionerapi.PublishVolumeRequest{VolumeId: other.GetVolume().GetId(), HostNqn: hostB, NodeId: "worker-2/" + hostB}); err != nil {
		t.Fatal(err)
	}
	r0 := v.GetReplicas()[0].GetId()
	event := func(id, node string) *provisionerapi.ReportEventsRequest {
		return &provisionerapi.ReportEventsRequest{Events: []*provisionerapi.Event{{Id: id, Type: "VolumeDegraded",
			Severity: provisionerapi.Severity_SEVERITY_WARNING, Time: timestamppb.Now(), VolumeId: v.GetId(), Node: node, Message: "m"}}}
	}

	call := func(f func() (any, error)) error { _, err := f(); return err }
	for _, tc := range []struct {
		name    string
		err     error
		want    codes.Code
		errPart string
	}{
		// A node's certificate asking for another host's secrets.
		{"node reads its own host's secrets", call(func() (any, error) {
			r, err := w1.GetHostCredentials(ctx, &provisionerapi.GetHostCredentialsRequest{HostNqn: hostA})
			if err == nil && len(r.GetCredentials()) == 0 {
				t.Error("worker-1 got no secrets for its own host")
			}
			return r, err
		}), codes.OK, ""},
		{"node reads another host's secrets", call(func() (any, error) {
			return w2.GetHostCredentials(ctx, &provisionerapi.GetHostCredentialsRequest{HostNqn: hostA})
		}), codes.PermissionDenied, "worker-2 (node) may not call /nvmirror.provisioner.v1.Provisioner/GetHostCredentials: host " + hostA + " has no volume published to node worker-2"},
		{"admin may not read host secrets", call(func() (any, error) {
			return ops.GetHostCredentials(ctx, &provisionerapi.GetHostCredentialsRequest{HostNqn: hostA})
		}), codes.PermissionDenied, "ops (admin)"},

		// Controller-only calls from a node.
		{"node creates", call(func() (any, error) {
			return w1.CreateVolume(ctx, &provisionerapi.CreateVolumeRequest{Name: "pvc-x", SizeBytes: gib})
		}), codes.PermissionDenied, "worker-1 (node) may not call /nvmirror.provisioner.v1.Provisioner/CreateVolume: allowed to controller"},
		{"node publishes", call(func() (any, error) {
			return w2.PublishVolume(ctx, &provisionerapi.PublishVolumeRequest{VolumeId: v.GetId(), HostNqn: hostB, NodeId: "worker-2/" + hostB})
		}), codes.PermissionDenied, "PublishVolume"},
		{"node unpublishes", call(func() (any, error) {
			return w1.UnpublishVolume(ctx, &provisionerapi.UnpublishVolumeRequest{VolumeId: v.GetId()})
		}), codes.PermissionDenied, "UnpublishVolume"},
		{"node deletes", call(func() (any, error) {
			return w1.DeleteVolume(ctx, &provisionerapi.DeleteVolumeRequest{VolumeId: v.GetId()})
		}), codes.PermissionDenied, "DeleteVolume"},
		{"node rotates", call(func() (any, error) {
			return w1.RotateCredentials(ctx, &provisionerapi.RotateCredentialsRequest{VolumeId: v.GetId()})
		}), codes.PermissionDenied, "RotateCredentials"},
		{"node lists volumes", call(func() (any, error) {
			return w1.ListVolumes(ctx, &provisionerapi.ListVolumesRequest{})
		}), codes.PermissionDenied, "ListVolumes"},
		{"node deletes a replica", call(func() (any, error) {
			return w1.DeleteReplica(ctx, &provisionerapi.DeleteReplicaRequest{VolumeId: v.GetId(), ReplicaId: r0})
		}), codes.PermissionDenied, "allowed to admin"},

		// Node-side calls: only for volumes published to the caller.
		{"node reads its volume", call(func() (any, error) {
			return w1.GetVolume(ctx, &provisionerapi.GetVolumeRequest{VolumeId: v.GetId()})
		}), codes.OK, ""},
		{"node reads another node's volume", call(func() (any, error) {
			return w2.GetVolume(ctx, &provisionerapi.GetVolumeRequest{VolumeId: v.GetId()})
		}), codes.PermissionDenied, "volume " + v.GetId() + " is published to node worker-1, not to worker-2"},
		{"node reads an unknown volume", call(func() (any, error) {
			return w2.GetVolume(ctx, &provisionerapi.GetVolumeRequest{VolumeId: "vol-unknown"})
		}), codes.NotFound, ""},
		{"node replaces another node's replica", call(func() (any, error) {
			return w2.ReplaceReplica(ctx, &provisionerapi.ReplaceReplicaRequest{VolumeId: v.GetId(), MissingReplicaId: r0})
		}), codes.PermissionDenied, "ReplaceReplica"},
		{"node marks another node's replica removed", call(func() (any, error) {
			return w2.MarkReplicaRemoved(ctx, &provisionerapi.MarkReplicaRemovedRequest{VolumeId: v.GetId(), ReplicaId: r0})
		}), codes.PermissionDenied, "MarkReplicaRemoved"},
		{"node reports sync of another node's volume", call(func() (any, error) {
			return w2.ReportReplicaSync(ctx, &provisionerapi.ReportReplicaSyncRequest{VolumeId: v.GetId(), ReplicaId: r0, InSync: true, NodeId: "worker-2/" + hostB})
		}), codes.PermissionDenied, "published to node worker-1"},
		{"node reports sync naming another node", call(func() (any, error) {
			return w1.ReportReplicaSync(ctx, &provisionerapi.ReportReplicaSyncRequest{VolumeId: v.GetId(), ReplicaId: r0, InSync: true, NodeId: "worker-2/" + hostB})
		}), codes.PermissionDenied, `node_id "worker-2/` + hostB + `" names another node`},
		{"node reports sync of its volume", call(func() (any, error) {
			return w1.ReportReplicaSync(ctx, &provisionerapi.ReportReplicaSyncRequest{VolumeId: v.GetId(), ReplicaId: r0, InSync: true, NodeId: "worker-1/" + hostA})
		}), codes.OK, ""},
		{"node reports its events", call(func() (any, error) { return w1.ReportEvents(ctx, event("e1", "worker-1/"+hostA)) }), codes.OK, ""},
		{"node reports events as another node", call(func() (any, error) { return w1.ReportEvents(ctx, event("e2", "worker-2/"+hostB)) }),
			codes.PermissionDenied, `event e2 names node "worker-2/` + hostB + `"`},
		{"node reports events naming no node", call(func() (any, error) { return w1.ReportEvents(ctx, event("e3", "")) }), codes.PermissionDenied, "e3"},
		{"node lists events", call(func() (any, error) { return w1.ListEvents(ctx, &provisionerapi.ListEventsRequest{}) }), codes.PermissionDenied, "ListEvents"},

		// The administrator: what nvmirrorctl uses.
		{"admin lists events", call(func() (any, error) { return ops.ListEvents(ctx, &provisionerapi.ListEventsRequest{}) }), codes.OK, ""},
		{"admin lists storage nodes", call(func() (any, error) { return ops.ListStorageNodes(ctx, &provisionerapi.ListStorageNodesRequest{}) }), codes.OK, ""},
		{"admin reads any volume", call(func() (any, error) { return ops.GetVolume(ctx, &provisionerapi.GetVolumeRequest{VolumeId: v.GetId()}) }), codes.OK, ""},
		{"admin may not delete volumes", call(func() (any, error) {
			return ops.DeleteVolume(ctx, &provisionerapi.DeleteVolumeRequest{VolumeId: v.GetId()})
		}), codes.PermissionDenied, "ops (admin)"},
		{"controller may not promote", call(func() (any, error) {
			return controller.PromoteReplicas(ctx, &provisionerapi.PromoteReplicasRequest{VolumeId: v.GetId(), ReplicaIds: []string{r0}, AcceptDataLoss: true})
		}), codes.PermissionDenied, "PromoteReplicas"},

		// The provisioner's own client certificate (for the agents) and a
		// storage node's call nothing here.
		{"provisioner certificate", call(func() (any, error) { return prov.GetVolume(ctx, &provisionerapi.GetVolumeRequest{VolumeId: v.GetId()}) }),
			codes.PermissionDenied, "nvmirror-provisioner (provisioner)"},
		{"storage node certificate", call(func() (any, error) {
			return a.as(t, "sn-1", "storage-node").GetHostCredentials(ctx, &provisionerapi.GetHostCredentialsRequest{HostNqn: hostA})
		}), codes.PermissionDenied, "sn-1 (storage-node)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tc.err); got != tc.want {
				t.Fatalf("code %v (%v), want %v", got, tc.err, tc.want)
			}
			if tc.errPart != "" && !strings.Contains(tc.err.Error(), tc.errPart) {
				t.Fatalf("err = %v, want it to say %q", tc.err, tc.errPart)
			}
		})
	}

	// Unpublished, the volume is out of worker-1's scope.
	if _, err := controller.UnpublishVolume(ctx, &provisionerapi.UnpublishVolumeRequest{VolumeId: v.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := w1.GetVolume(ctx, &provisionerapi.GetVolumeRequest{VolumeId: v.GetId()}); status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), "published to no node") {
		t.Fatalf("GetVolume after unpublish: %v, want PermissionDenied", err)
	}
}

// TestAuthorizationTableCoversTheAPI: every method of the provisioner's API
// is in the table. A method missing from it is refused to everyone, so an
// RPC added without a row would ship unusable.
func TestAuthorizationTableCoversTheAPI(t *testing.T) {
	p, ok := provisioner.NewAuthorizer(nil).(rpcauth.Policy)
	if !ok {
		t.Fatalf("NewAuthorizer is %T, want an rpcauth.Policy", provisioner.NewAuthorizer(nil))
	}
	var names []string
	for _, m := range provisionerapi.Provisioner_ServiceDesc.Methods {
		names = append(names, m.MethodName)
	}
	for _, s := range provisionerapi.Provisioner_ServiceDesc.Streams {
		names = append(names, s.StreamName)
	}
	for _, m := range names {
		name := "/" + provisionerapi.Provisioner_ServiceDesc.ServiceName + "/" + m
		if r, ok := p[name]; !ok || (len(r.Roles) == 0 && len(r.Scoped) == 0) {
			t.Errorf("%s is in no role's table", name)
		}
	}
}
