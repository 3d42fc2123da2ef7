package provisioner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// Who may call what on the provisioner's API: the one table. The CSI
// controller runs the volume lifecycle; an administrator's nvmirrorctl
// inspects and tunes (what it uses, and DeleteReplica, an administrator's
// operation); a node plugin makes the node-side calls, each only for what
// concerns its own node: volumes published to it (the node name of the
// volume's published CSI node ID is the certificate's name), its own host's
// secrets, events and sync records naming itself. The provisioner and
// storage nodes call nothing here.
const (
	healthCheck = "/grpc.health.v1.Health/Check"
	healthWatch = "/grpc.health.v1.Health/Watch"
)

var (
	ctl   = rpcauth.RoleController
	admin = rpcauth.RoleAdmin
	node  = rpcauth.RoleNode
)

// NewAuthorizer returns the provisioner API's authorization, reading the
// registry for the node plugins' scope.
func NewAuthorizer(st store.Store) rpcauth.Authorizer {
	s := &scope{store: st, hosts: map[hostBinding]time.Time{}, now: time.Now}
	byVolume := map[rpcauth.Role]rpcauth.ScopeCheck{node: s.publishedToCaller}
	return rpcauth.Policy{
		provisionerapi.Provisioner_CreateVolume_FullMethodName:      {Roles: roles(ctl)},
		provisionerapi.Provisioner_DeleteVolume_FullMethodName:      {Roles: roles(ctl)},
		provisionerapi.Provisioner_PublishVolume_FullMethodName:     {Roles: roles(ctl)},
		provisionerapi.Provisioner_UnpublishVolume_FullMethodName:   {Roles: roles(ctl)},
		provisionerapi.Provisioner_ExpandVolume_FullMethodName:      {Roles: roles(ctl)},
		provisionerapi.Provisioner_ModifyVolume_FullMethodName:      {Roles: roles(ctl, admin)},
		provisionerapi.Provisioner_GetCapacity_FullMethodName:       {Roles: roles(ctl, admin)},
		provisionerapi.Provisioner_ListVolumes_FullMethodName:       {Roles: roles(ctl, admin)},
		provisionerapi.Provisioner_RotateCredentials_FullMethodName: {Roles: roles(ctl, admin)},
		provisionerapi.Provisioner_GetVolume_FullMethodName:         {Roles: roles(ctl, admin), Scoped: byVolume},

		// Snapshots: the CSI controller's (snapshotter sidecar) and an
		// administrator's (nvmirrorctl snapshots).
		provisionerapi.Provisioner_CreateSnapshot_FullMethodName:      {Roles: roles(ctl)},
		provisionerapi.Provisioner_DeleteSnapshot_FullMethodName:      {Roles: roles(ctl, admin)},
		provisionerapi.Provisioner_GetSnapshot_FullMethodName:         {Roles: roles(ctl, admin)},
		provisionerapi.Provisioner_ListSnapshots_FullMethodName:       {Roles: roles(ctl, admin)},
		provisionerapi.Provisioner_CreateSnapshotGroup_FullMethodName: {Roles: roles(ctl)},
		provisionerapi.Provisioner_DeleteSnapshotGroup_FullMethodName: {Roles: roles(ctl, admin)},
		provisionerapi.Provisioner_GetSnapshotGroup_FullMethodName:    {Roles: roles(ctl, admin)},
		provisionerapi.Provisioner_GetSnapshotRanges_FullMethodName:   {Roles: roles(ctl, admin)},

		provisionerapi.Provisioner_DeleteReplica_FullMethodName:    {Roles: roles(admin)},
		provisionerapi.Provisioner_PromoteReplicas_FullMethodName:  {Roles: roles(admin)},
		provisionerapi.Provisioner_ListEvents_FullMethodName:       {Roles: roles(admin)},
		provisionerapi.Provisioner_ListStorageNodes_FullMethodName: {Roles: roles(admin)},
		// Storage node maintenance and orphans are an administrator's.
		provisionerapi.Provisioner_MoveReplica_FullMethodName:       {Roles: roles(admin)},
		provisionerapi.Provisioner_CordonStorageNode_FullMethodName: {Roles: roles(admin)},
		provisionerapi.Provisioner_DrainStorageNode_FullMethodName:  {Roles: roles(admin)},
		provisionerapi.Provisioner_ListOrphans_FullMethodName:       {Roles: roles(admin)},
		provisionerapi.Provisioner_ReclaimOrphan_FullMethodName:     {Roles: roles(admin)},

		// A node's healer replaces a replica of its volume; an
		// administrator one they distrust (nvmirrorctl replace).
		provisionerapi.Provisioner_ReplaceReplica_FullMethodName:     {Roles: roles(admin), Scoped: byVolume},
		provisionerapi.Provisioner_MarkReplicaRemoved_FullMethodName: {Scoped: byVolume},
		provisionerapi.Provisioner_ReportReplicaSync_FullMethodName:  {Scoped: map[rpcauth.Role]rpcauth.ScopeCheck{node: s.syncFromCaller}},
		provisionerapi.Provisioner_GetHostCredentials_FullMethodName: {Scoped: map[rpcauth.Role]rpcauth.ScopeCheck{node: s.ownHost}},
		// The controller reports its audit records; a node its events and
		// audit records, each naming the node.
		provisionerapi.Provisioner_ReportEvents_FullMethodName: {Roles: roles(ctl), Scoped: map[rpcauth.Role]rpcauth.ScopeCheck{node: eventsFromCaller}},

		// A node's command channel (snapshot freezes): its own stream,
		// its own results.
		provisionerapi.Provisioner_NodeCommands_FullMethodName:        {Scoped: map[rpcauth.Role]rpcauth.ScopeCheck{node: ownNode}},
		provisionerapi.Provisioner_ReportCommandResult_FullMethodName: {Scoped: map[rpcauth.Role]rpcauth.ScopeCheck{node: ownNode}},

		healthCheck: {Roles: roles(ctl, node, admin)},
		healthWatch: {Roles: roles(ctl, node, admin)},
	}
}

func roles(r ...rpcauth.Role) []rpcauth.Role { return r }

// hostBindingTTL is how long a node's claim to a host NQN, once found in
// the registry, is believed without reading the registry again (a node's
// healer asks for its host's secrets every cycle).
const hostBindingTTL = time.Minute

type hostBinding struct{ node, host string }

// scope answers the node plugins' scoped checks from the registry.
type scope struct {
	store store.Store
	now   func() time.Time

	mu    sync.Mutex
	hosts map[hostBinding]time.Time // verified until
}

type volumeIDGetter interface{ GetVolumeId() string }

// publishedToCaller allows a call about a volume published to the
// caller's node. An unknown volume is left to the handler (NotFound): a
// volume's existence is no secret, and the healer must learn that a volume
// it holds was deleted.
func (s *scope) publishedToCaller(ctx context.Context, id rpcauth.Identity, method string, req any) error {
	g, ok := req.(volumeIDGetter)
	if !ok || g.GetVolumeId() == "" {
		return nil // the handler refuses the missing volume_id
	}
	v, err := s.store.GetVolume(ctx, g.GetVolumeId())
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if nodeName(v.PublishedNodeID) != id.Name {
		to := "no node"
		if v.PublishedNodeID != "" {
			to = "node " + nodeName(v.PublishedNodeID)
		}
		return rpcauth.Denied(id, method, fmt.Sprintf("volume %s is published to %s, not to %s", v.ID, to, id.Name))
	}
	return nil
}

// syncFromCaller: a sync record about a volume published to the caller,
// naming the caller (or no node).
func (s *scope) syncFromCaller(ctx context.Context, id rpcauth.Identity, method string, req any) error {
	if r, ok := req.(*provisionerapi.ReportReplicaSyncRequest); ok && r.GetNodeId() != "" && nodeName(r.GetNodeId()) != id.Name {
		return rpcauth.Denied(id, method, fmt.Sprintf("node_id %q names another node", r.GetNodeId()))
	}
	return s.publishedToCaller(ctx, id, method, req)
}

// ownHost allows a node its own host's DH-HMAC-CHAP secrets: the host NQN
// of a volume published to the caller's node. A host with no secrets in
// the registry gets the empty answer whoever asks.
func (s *scope) ownHost(ctx context.Context, id rpcauth.Identity, method string, req any) error {
	host := req.(*provisionerapi.GetHostCredentialsRequest).GetHostNqn()
	if _, err := s.store.GetHostCredentials(ctx, host); errors.Is(err, store.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	b := hostBinding{node: id.Name, host: host}
	s.mu.Lock()
	until, ok := s.hosts[b]
	s.mu.Unlock()
	if ok && s.now().Before(until) {
		return nil
	}
	vols, err := s.store.ListVolumes(ctx)
	if err != nil {
		return err
	}
	for _, v := range vols {
		if name, nqn, _ := volume.SplitNodeID(v.PublishedNodeID); v.PublishedHostNQN == host && name == id.Name && nqn == host {
			s.mu.Lock()
			s.hosts[b] = s.now().Add(hostBindingTTL)
			s.mu.Unlock()
			return nil
		}
	}
	return rpcauth.Denied(id, method, fmt.Sprintf("host %s has no volume published to node %s", host, id.Name))
}

// eventsFromCaller: every event names the caller as its node.
func eventsFromCaller(_ context.Context, id rpcauth.Identity, method string, req any) error {
	for _, e := range req.(*provisionerapi.ReportEventsRequest).GetEvents() {
		n := e.GetNode()
		if n == "" {
			n = e.GetAttributes()[provisionerapi.AttrNode]
		}
		if nodeName(n) != id.Name {
			return rpcauth.Denied(id, method, fmt.Sprintf("event %s names node %q", e.GetId(), n))
		}
	}
	return nil
}

// ownNode: a request whose node_id names the caller's node. Stream
// interceptors authorize before the first message (req is nil): the
// NodeCommands handler makes this check itself on its request.
func ownNode(_ context.Context, id rpcauth.Identity, method string, req any) error {
	g, ok := req.(interface{ GetNodeId() string })
	if !ok {
		return nil
	}
	if nodeName(g.GetNodeId()) != id.Name {
		return rpcauth.Denied(id, method, fmt.Sprintf("node_id %q names another node", g.GetNodeId()))
	}
	return nil
}

// nodeName is the node name of a CSI node ID (or a bare node name).
func nodeName(nodeID string) string {
	name, _, _ := volume.SplitNodeID(nodeID)
	return name
}
