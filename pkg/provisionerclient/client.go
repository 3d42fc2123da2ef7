// Package provisionerclient is the Go client of nvmirror-provisioner's gRPC
// API. Client implements volume.Provisioner for the CSI driver, mapping the
// provisioner's status codes onto the driver's sentinel errors (keeping the
// provisioner's message, which names the volume and what is wrong), and
// offers the calls other clients need (the node's healer and event
// reporter, nvmirrorctl).
//
// Connect with rpcauth.Dial, which brings TLS and the bearer token:
//
//	conn, err := rpcauth.Dial(addr, rpcauth.ClientConfig{CAFile: ..., TokenFile: ...})
//	prov := provisionerclient.New(conn)
package provisionerclient

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/grpcerr"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// Client calls the provisioner over one connection. It is safe for
// concurrent use.
type Client struct {
	api    provisionerapi.ProvisionerClient
	health healthpb.HealthClient
}

var _ volume.Provisioner = (*Client)(nil)

// New returns a client over conn (which the caller closes).
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{api: provisionerapi.NewProvisionerClient(conn), health: healthpb.NewHealthClient(conn)}
}

// API returns the generated client, for callers that want the wire types
// (nvmirrorctl).
func (c *Client) API() provisionerapi.ProvisionerClient { return c.api }

// sentinels translate the provisioner's status codes into the driver's
// errors, keeping its message. Codes without a sentinel (Internal,
// Unauthenticated, Canceled, ...) stay status errors, which the driver
// passes through to the CO unchanged.
var sentinels = grpcerr.Sentinels{
	codes.NotFound:           volume.ErrNotFound,
	codes.AlreadyExists:      volume.ErrAlreadyExists,
	codes.InvalidArgument:    volume.ErrInvalidArgument,
	codes.FailedPrecondition: volume.ErrFailedPrecondition,
	codes.ResourceExhausted:  volume.ErrResourceExhausted,
	codes.Unavailable:        volume.ErrUnavailable,
	codes.DeadlineExceeded:   volume.ErrUnavailable,
	codes.Aborted:            volume.ErrAborted,
	codes.OutOfRange:         volume.ErrOutOfRange,
}

func mapErr(err error) error { return sentinels.Map(err, "provisioner") }

func (c *Client) CreateVolume(ctx context.Context, req volume.CreateVolumeRequest) (*volume.Volume, error) {
	resp, err := c.api.CreateVolume(ctx, &provisionerapi.CreateVolumeRequest{Name: req.Name, SizeBytes: req.SizeBytes, Parameters: req.Parameters, Block: req.Block,
		SourceSnapshotId: req.SourceSnapshotID, SourceVolumeId: req.SourceVolumeID})
	if err != nil {
		return nil, mapErr(err)
	}
	return VolumeFromProto(resp.GetVolume()), nil
}

func (c *Client) DeleteVolume(ctx context.Context, id string) error {
	_, err := c.api.DeleteVolume(ctx, &provisionerapi.DeleteVolumeRequest{VolumeId: id})
	return mapErr(err)
}

// GetHostCredentials fetches the host's DH-HMAC-CHAP secrets per storage node.
func (c *Client) GetHostCredentials(ctx context.Context, hostNQN string) ([]volume.Credentials, error) {
	resp, err := c.api.GetHostCredentials(ctx, &provisionerapi.GetHostCredentialsRequest{HostNqn: hostNQN})
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]volume.Credentials, 0, len(resp.GetCredentials()))
	for _, cr := range resp.GetCredentials() {
		out = append(out, volume.Credentials{StorageNode: cr.GetStorageNode(), Secret: cr.GetDhchapSecret(),
			CtrlSecret: cr.GetDhchapCtrlSecret(), Generation: cr.GetGeneration()})
	}
	return out, nil
}

// RotateCredentials asks for new secrets between the volume's host and its
// storage nodes; per storage node, an empty error means done.
func (c *Client) RotateCredentials(ctx context.Context, volumeID string) (*provisionerapi.RotateCredentialsResponse, error) {
	resp, err := c.api.RotateCredentials(ctx, &provisionerapi.RotateCredentialsRequest{VolumeId: volumeID})
	return resp, mapErr(err)
}

func (c *Client) GetVolume(ctx context.Context, id string) (*volume.Volume, error) {
	resp, err := c.api.GetVolume(ctx, &provisionerapi.GetVolumeRequest{VolumeId: id})
	if err != nil {
		return nil, mapErr(err)
	}
	return VolumeFromProto(resp.GetVolume()), nil
}

// ListVolumes pages through the registry for CSI ListVolumes. Volumes being
// deleted are left out: the CO deleted them, and listing them would show it
// volumes it no longer has (they only wait for storage nodes that were
// away). A page can therefore hold fewer than max entries with a next
// token, which CSI allows.
func (c *Client) ListVolumes(ctx context.Context, startToken string, max int) ([]*volume.Volume, string, error) {
	resp, err := c.api.ListVolumes(ctx, &provisionerapi.ListVolumesRequest{StartingToken: startToken, MaxEntries: int32(max)})
	if err != nil {
		return nil, "", mapErr(err)
	}
	var out []*volume.Volume
	for _, v := range resp.GetVolumes() {
		if v.GetState() == "deleting" {
			continue
		}
		out = append(out, VolumeFromProto(v))
	}
	return out, resp.GetNextToken(), nil
}

func (c *Client) PublishVolume(ctx context.Context, id, hostNQN, nodeID string) (*volume.Volume, error) {
	resp, err := c.api.PublishVolume(ctx, &provisionerapi.PublishVolumeRequest{VolumeId: id, HostNqn: hostNQN, NodeId: nodeID})
	if err != nil {
		return nil, mapErr(err)
	}
	return VolumeFromProto(resp.GetVolume()), nil
}

func (c *Client) UnpublishVolume(ctx context.Context, id, hostNQN string) error {
	_, err := c.api.UnpublishVolume(ctx, &provisionerapi.UnpublishVolumeRequest{VolumeId: id, HostNqn: hostNQN})
	return mapErr(err)
}

func (c *Client) ExpandVolume(ctx context.Context, id string, sizeBytes int64) (*volume.Volume, error) {
	resp, err := c.api.ExpandVolume(ctx, &provisionerapi.ExpandVolumeRequest{VolumeId: id, SizeBytes: sizeBytes})
	if err != nil {
		return nil, mapErr(err)
	}
	return VolumeFromProto(resp.GetVolume()), nil
}

func (c *Client) ModifyVolume(ctx context.Context, id string, mutable map[string]string) (*volume.Volume, error) {
	resp, err := c.api.ModifyVolume(ctx, &provisionerapi.ModifyVolumeRequest{VolumeId: id, MutableParameters: mutable})
	if err != nil {
		return nil, mapErr(err)
	}
	return VolumeFromProto(resp.GetVolume()), nil
}

func (c *Client) GetCapacity(ctx context.Context, params map[string]string) (int64, error) {
	resp, err := c.api.GetCapacity(ctx, &provisionerapi.GetCapacityRequest{Parameters: params})
	if err != nil {
		return 0, mapErr(err)
	}
	return resp.GetAvailableBytes(), nil
}

// ReportAudit sends the record as an Audit event. Its ID is a digest of
// the record, so sending the same record twice (a retry after a timeout)
// stores it once.
func (c *Client) ReportAudit(ctx context.Context, rec volume.AuditRecord) error {
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	e := &provisionerapi.Event{
		Id:       AuditID(rec),
		Type:     string(events.Audit),
		Time:     timestamppb.New(rec.Time),
		VolumeId: rec.VolumeID,
		Node:     rec.Node,
		Message:  rec.Message,
		Attributes: map[string]string{
			provisionerapi.AttrOperation: rec.Operation,
			provisionerapi.AttrOutcome:   string(rec.Outcome),
			provisionerapi.AttrNode:      rec.Node,
			provisionerapi.AttrMessage:   rec.Message,
		},
	}
	_, err := c.api.ReportEvents(ctx, &provisionerapi.ReportEventsRequest{Events: []*provisionerapi.Event{e}})
	return mapErr(err)
}

// AuditID is the event ID of an audit record: a digest of every field, so
// it is the same for a resend and differs between records (their times
// differ by at least a nanosecond).
func AuditID(rec volume.AuditRecord) string {
	h := sha256.New()
	for _, f := range []string{strconv.FormatInt(rec.Time.UnixNano(), 10), rec.Operation, rec.VolumeID, rec.Node, string(rec.Outcome), rec.Message} {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	return "audit-" + hex.EncodeToString(h.Sum(nil))[:32]
}

// Ping succeeds when the provisioner answers its health check with
// SERVING, which it does only while it leads.
func (c *Client) Ping(ctx context.Context) error {
	resp, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return mapErr(err)
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("provisioner: health %s (not the leader, or shutting down): %w", s, volume.ErrUnavailable)
	}
	return nil
}

// ReplaceReplica asks for a replacement of a replica that stayed away too
// long and returns the volume and the new replica (the same one on a
// retry).
func (c *Client) ReplaceReplica(ctx context.Context, volumeID, missingReplicaID string) (*volume.Volume, *volume.Replica, error) {
	resp, err := c.api.ReplaceReplica(ctx, &provisionerapi.ReplaceReplicaRequest{VolumeId: volumeID, MissingReplicaId: missingReplicaID})
	if err != nil {
		return nil, nil, mapErr(err)
	}
	r := replicaFromProto(resp.GetNewReplica())
	return VolumeFromProto(resp.GetVolume()), &r, nil
}

// MarkReplicaRemoved records that the node took a deleted replica out of
// its array.
func (c *Client) MarkReplicaRemoved(ctx context.Context, volumeID, replicaID string) (*volume.Volume, error) {
	resp, err := c.api.MarkReplicaRemoved(ctx, &provisionerapi.MarkReplicaRemovedRequest{VolumeId: volumeID, ReplicaId: replicaID})
	if err != nil {
		return nil, mapErr(err)
	}
	return VolumeFromProto(resp.GetVolume()), nil
}

// DeleteReplica takes one replica out of a volume's configuration (an
// administrator's operation): it becomes deleted, the node removes it from
// its array, and its storage node deletes it (now, or when it returns).
// Deleting the last active replica is volume.ErrFailedPrecondition.
func (c *Client) DeleteReplica(ctx context.Context, volumeID, replicaID string) (*volume.Volume, error) {
	resp, err := c.api.DeleteReplica(ctx, &provisionerapi.DeleteReplicaRequest{VolumeId: volumeID, ReplicaId: replicaID})
	if err != nil {
		return nil, mapErr(err)
	}
	return VolumeFromProto(resp.GetVolume()), nil
}

// ReportReplicaSync records what the node's md says of a replica: out of
// sync since observedAt (md failed or lost it; arrayEvents is the array's
// event count then), or in sync again (inSync: recovery onto it finished).
// A report that would leave the volume without an in-sync active replica,
// or about a replica that is not active, is volume.ErrFailedPrecondition.
func (c *Client) ReportReplicaSync(ctx context.Context, volumeID, replicaID string, inSync bool, observedAt time.Time, arrayEvents uint64, nodeID string) (*volume.Volume, error) {
	req := &provisionerapi.ReportReplicaSyncRequest{VolumeId: volumeID, ReplicaId: replicaID, InSync: inSync, ArrayEvents: arrayEvents, NodeId: nodeID}
	if !observedAt.IsZero() {
		req.ObservedAt = timestamppb.New(observedAt)
	}
	resp, err := c.api.ReportReplicaSync(ctx, req)
	if err != nil {
		return nil, mapErr(err)
	}
	return VolumeFromProto(resp.GetVolume()), nil
}

// PromoteReplicas marks out-of-sync replicas in sync so that a node may
// start the volume from them, losing the writes acknowledged while they
// were out of sync (an administrator's operation, recorded as an Audit
// event with reason). It always accepts the data loss: the caller's
// confirmation (nvmirrorctl's --accept-data-loss) is the check.
func (c *Client) PromoteReplicas(ctx context.Context, volumeID string, replicaIDs []string, reason string) (*volume.Volume, error) {
	resp, err := c.api.PromoteReplicas(ctx, &provisionerapi.PromoteReplicasRequest{VolumeId: volumeID, ReplicaIds: replicaIDs, AcceptDataLoss: true, Reason: reason})
	if err != nil {
		return nil, mapErr(err)
	}
	return VolumeFromProto(resp.GetVolume()), nil
}

// ReportEvents sends events (give each an ID, so a resend is stored once).
func (c *Client) ReportEvents(ctx context.Context, es ...events.Event) error {
	req := &provisionerapi.ReportEventsRequest{}
	for _, e := range es {
		req.Events = append(req.Events, provisionerapi.EventToProto(e))
	}
	_, err := c.api.ReportEvents(ctx, req)
	return mapErr(err)
}

// ListEvents queries stored events, oldest first. The API filters by one
// type at most and has no end time: a filter with several types or Until
// is ErrInvalidArgument rather than silently widened.
func (c *Client) ListEvents(ctx context.Context, f events.Filter) ([]events.Event, error) {
	if len(f.Types) > 1 || !f.Until.IsZero() {
		return nil, fmt.Errorf("provisioner: event filter with %d types and until %v: the API takes one type and no end time: %w", len(f.Types), f.Until, volume.ErrInvalidArgument)
	}
	req := &provisionerapi.ListEventsRequest{VolumeId: f.Volume, Node: f.Node, Limit: int32(f.Limit), AfterSeq: f.AfterSeq}
	if len(f.Types) == 1 {
		req.Type = string(f.Types[0])
	}
	if !f.Since.IsZero() {
		req.Since = timestamppb.New(f.Since)
	}
	resp, err := c.api.ListEvents(ctx, req)
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]events.Event, 0, len(resp.GetEvents()))
	for _, p := range resp.GetEvents() {
		e := provisionerapi.EventFromProto(p)
		e.Seq = p.GetSeq()
		out = append(out, e)
	}
	return out, nil
}

// ListStorageNodes returns the registered storage nodes as the provisioner
// surveyed them just now.
func (c *Client) ListStorageNodes(ctx context.Context) ([]*provisionerapi.StorageNode, error) {
	resp, err := c.api.ListStorageNodes(ctx, &provisionerapi.ListStorageNodesRequest{})
	if err != nil {
		return nil, mapErr(err)
	}
	return resp.GetNodes(), nil
}

// VolumeFromProto converts a wire volume to the driver's form.
func VolumeFromProto(p *provisionerapi.Volume) *volume.Volume {
	v := &volume.Volume{
		ID: p.GetId(), Name: p.GetName(), SizeBytes: p.GetSizeBytes(), Parameters: p.GetParameters(),
		MDUUID: p.GetMdUuid(), MDName: p.GetMdName(),
		PublishedHost: p.GetPublishedHostNqn(), PublishedNode: p.GetPublishedNodeId(),
	}
	if v.Parameters == nil {
		v.Parameters = map[string]string{}
	}
	v.Policy = policyFromProto(p.GetPolicy())
	if p.GetDegradedSince() != nil {
		v.DegradedSince = p.GetDegradedSince().AsTime()
	}
	for _, r := range p.GetReplicas() {
		v.Replicas = append(v.Replicas, replicaFromProto(r))
	}
	v.SourceSnapshotID, v.SourceVolumeID = p.GetSource().GetSnapshotId(), p.GetSource().GetVolumeId()
	return v
}

func replicaFromProto(p *provisionerapi.Replica) volume.Replica {
	r := volume.Replica{ID: p.GetId(), StorageNode: p.GetStorageNode(), NQN: p.GetNqn(), NamespaceUUID: p.GetNamespaceUuid(), State: replicaState(p.GetState())}
	for _, e := range p.GetEndpoints() {
		r.Endpoints = append(r.Endpoints, volume.Endpoint{Address: e.GetAddress(), Port: e.GetPort()})
	}
	// Unset (in sync) from a provisioner older than the field, as before.
	if p.GetOutOfSyncSince() != nil {
		r.OutOfSyncSince = p.GetOutOfSyncSince().AsTime()
	}
	r.OutOfSyncAtEvents = p.GetOutOfSyncAtEvents()
	r.Move = p.GetMove()
	if p.GetDivergedSince() != nil {
		r.DivergedSince = p.GetDivergedSince().AsTime()
	}
	return r
}

// policyFromProto reads the typed policy; a provisioner older than the
// field sends none, and a volume then has the StorageClass defaults.
func policyFromProto(p *provisionerapi.VolumePolicy) storageclass.Policy {
	if p == nil {
		return storageclass.DefaultPolicy()
	}
	return storageclass.Policy{
		NumReplicas:               int(p.GetNumReplicas()),
		MaxReplicaDownTimeMinutes: int(p.GetMaxReplicaDownTimeMinutes()),
		FSType:                    p.GetFsType(),
		Authentication:            storageclass.Authentication(p.GetAuthentication()),
		RebuildBandwidthMiBps:     int(p.GetRebuildBandwidthMibps()),
	}
}

func replicaState(s provisionerapi.ReplicaState) volume.ReplicaState {
	switch s {
	case provisionerapi.ReplicaState_REPLICA_STATE_ACTIVE:
		return volume.ReplicaActive
	case provisionerapi.ReplicaState_REPLICA_STATE_DELETING:
		return volume.ReplicaDeleting
	case provisionerapi.ReplicaState_REPLICA_STATE_DELETED:
		return volume.ReplicaDeleted
	case provisionerapi.ReplicaState_REPLICA_STATE_REMOVED:
		return volume.ReplicaRemoved
	}
	return ""
}
