package provisioner

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
)

// The provisioner's end of the command channel to the CSI nodes
// (NodeCommands, ReportCommandResult): each node plugin keeps one stream
// open to the leader (nothing dials a node); a command is sent on its
// node's stream and waited for until its result comes back through
// ReportCommandResult, the caller's context ends, or the stream does.
//
// The snapshot code calls Freeze and Thaw. A freeze holds new writes to the
// md arrays of the volumes on the node once every write in flight reached
// every member (docs/nvmirror-csi.md#snapshot-freeze), so copies cut of the
// replicas meanwhile hold the same bytes.

// nodeStreamLeaderCheck is how often a node's stream checks that this
// provisioner still leads; a stream to a follower ends (Unavailable) so
// the node reconnects, to the new leader.
const nodeStreamLeaderCheck = time.Second

// NodeHub holds the open node streams and the commands waiting for a
// result. It is safe for concurrent use.
type NodeHub struct {
	isLeader func() bool
	newID    func(prefix string) string

	mu sync.Mutex
	// nodes: the open stream of each node, by node name (the part of the
	// CSI node ID its certificate names). A node's newer stream replaces
	// its older one.
	nodes map[string]*nodeStream
	// pending: commands sent and not answered, by command ID.
	pending map[string]*pendingCommand
	// closed: Shutdown ran; streams are refused.
	closed bool
}

type nodeStream struct {
	nodeID string
	out    chan *provisionerapi.NodeCommand
	// gone is closed when the stream ended (or was replaced).
	gone     chan struct{}
	goneOnce sync.Once
}

func (n *nodeStream) end() { n.goneOnce.Do(func() { close(n.gone) }) }

type pendingCommand struct {
	node   string // node name
	result chan *provisionerapi.CommandResult
}

var _ Quiescer = (*NodeHub)(nil)

func newNodeHub(isLeader func() bool, newID func(prefix string) string) *NodeHub {
	return &NodeHub{isLeader: isLeader, newID: newID, nodes: map[string]*nodeStream{}, pending: map[string]*pendingCommand{}}
}

// Nodes returns the command channel to the CSI nodes.
func (s *Service) Nodes() *NodeHub { return s.nodes }

// Connected reports whether the node (a CSI node ID or node name) has its
// stream open to this provisioner.
func (h *NodeHub) Connected(nodeID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.nodes[nodeName(nodeID)]
	return ok
}

// serve runs one node's stream until ctx ends, send fails, a newer stream
// of the node replaces it, or this provisioner stops leading
// (store.ErrNotLeader).
func (h *NodeHub) serve(ctx context.Context, nodeID string, send func(*provisionerapi.NodeCommand) error) error {
	if !h.isLeader() {
		return notLeader()
	}
	name := nodeName(nodeID)
	ns := &nodeStream{nodeID: nodeID, out: make(chan *provisionerapi.NodeCommand), gone: make(chan struct{})}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return fmt.Errorf("%w: the provisioner is stopping", ErrUnavailable)
	}
	old := h.nodes[name]
	h.nodes[name] = ns
	h.mu.Unlock()
	if old != nil {
		old.end()
	}
	klog.InfoS("Node command stream open", "nodeID", nodeID, "replaced", old != nil)
	defer func() {
		h.mu.Lock()
		if h.nodes[name] == ns {
			delete(h.nodes, name)
		}
		h.mu.Unlock()
		ns.end()
		klog.InfoS("Node command stream closed", "nodeID", nodeID)
	}()
	tick := time.NewTicker(nodeStreamLeaderCheck)
	defer tick.Stop()
	for {
		select {
		case cmd := <-ns.out:
			if err := send(cmd); err != nil {
				return err
			}
		case <-ns.gone:
			return fmt.Errorf("%w: a newer stream of node %s replaced this one, or the provisioner is stopping", ErrUnavailable, nodeID)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if !h.isLeader() {
				return notLeader()
			}
		}
	}
}

// Shutdown ends every node stream (the nodes reconnect, to the next
// leader) and refuses new ones: a graceful stop of the gRPC server waits
// for open streams, and these never end on their own.
func (h *NodeHub) Shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, ns := range h.nodes {
		ns.end()
	}
}

func notLeader() error {
	return fmt.Errorf("%w: this provisioner is not the leader; reconnect", store.ErrNotLeader)
}

// deliver hands a node's result to the command waiting for it. A result no
// one waits for (the caller gave up, or a repeat) is accepted and dropped:
// reporting is idempotent.
func (h *NodeHub) deliver(r *provisionerapi.CommandResult) error {
	h.mu.Lock()
	p := h.pending[r.GetCommandId()]
	h.mu.Unlock()
	if p == nil {
		klog.V(3).InfoS("Result of a command no one waits for", "commandID", r.GetCommandId(), "nodeID", r.GetNodeId())
		return nil
	}
	if nodeName(r.GetNodeId()) != p.node {
		return fmt.Errorf("%w: command %s was not sent to node %s", ErrFailedPrecondition, r.GetCommandId(), r.GetNodeId())
	}
	select {
	case p.result <- r:
	default: // a repeat of a result already delivered
	}
	return nil
}

// do sends cmd to the node and waits for its result. sent says whether the
// command went onto the node's stream.
func (h *NodeHub) do(ctx context.Context, nodeID string, cmd *provisionerapi.NodeCommand) (res *provisionerapi.CommandResult, sent bool, err error) {
	name := nodeName(nodeID)
	p := &pendingCommand{node: name, result: make(chan *provisionerapi.CommandResult, 1)}
	h.mu.Lock()
	ns := h.nodes[name]
	if ns != nil {
		h.pending[cmd.GetCommandId()] = p
	}
	h.mu.Unlock()
	if ns == nil {
		return nil, false, fmt.Errorf("%w: no node channel to node %s: it has no command stream open to this provisioner", ErrNodeNotConnected, nodeID)
	}
	defer func() {
		h.mu.Lock()
		delete(h.pending, cmd.GetCommandId())
		h.mu.Unlock()
	}()
	select {
	case ns.out <- cmd:
	case <-ns.gone:
		return nil, false, fmt.Errorf("%w: node %s's command stream closed", ErrNodeNotConnected, nodeID)
	case <-ctx.Done():
		return nil, false, fmt.Errorf("%w: node %s did not take command %s: %w", ErrUnavailable, nodeID, cmd.GetCommandId(), ctx.Err())
	}
	select {
	case r := <-p.result:
		return r, true, nil
	case <-ns.gone:
		return nil, true, fmt.Errorf("%w: node %s's command stream closed before it answered command %s", ErrNodeNotConnected, nodeID, cmd.GetCommandId())
	case <-ctx.Done():
		return nil, true, fmt.Errorf("%w: node %s did not answer command %s: %w", ErrUnavailable, nodeID, cmd.GetCommandId(), ctx.Err())
	}
}

// Freeze holds new writes to the volumes (staged on node nodeID, a CSI
// node ID or node name) once every write in flight reached every member of
// each volume's md array, all or nothing, and returns the freeze's ID (for
// Thaw) and, per volume, the replicas md held as in-sync members while
// frozen: only their copies are the volume. A one-replica volume has no md
// and nothing is held; its single replica is reported, and its point in
// time is the instant its file is copied.
//
// The node holds until Thaw, or by itself until thawAfter (capped by the
// node's --freeze-max-hold) has passed since it received the freeze:
// copies cut later than the time Freeze was called plus thawAfter may
// differ. The caller cuts its copies within that bound and then calls
// Thaw.
//
// Errors: ErrNodeNotConnected (Unavailable) when the node has no stream
// open or it closes before answering; ErrUnavailable when ctx ends first
// or the node refused (a volume not staged there, busy with another node
// operation, resyncing...; the message is the node's). A freeze that may
// have been made is thawed at once, in the background.
func (h *NodeHub) Freeze(ctx context.Context, nodeID string, volumeIDs []string, thawAfter time.Duration) (freezeID string, inSync map[string][]string, err error) {
	if !h.isLeader() {
		return "", nil, notLeader()
	}
	if len(volumeIDs) == 0 {
		return "", nil, fmt.Errorf("%w: freeze of no volume", ErrInvalidArgument)
	}
	if thawAfter <= 0 || thawAfter.Milliseconds() > math.MaxUint32 {
		return "", nil, fmt.Errorf("%w: thawAfter %v must be positive and below 49 days", ErrInvalidArgument, thawAfter)
	}
	freezeID = h.newID("frz-")
	cmd := &provisionerapi.NodeCommand{CommandId: freezeID, Command: &provisionerapi.NodeCommand_Freeze{
		Freeze: &provisionerapi.FreezeVolumes{VolumeIds: volumeIDs, ThawAfterMs: uint32(thawAfter.Milliseconds())}}}
	res, sent, err := h.do(ctx, nodeID, cmd)
	if err == nil && res.GetError() != "" {
		err = fmt.Errorf("%w: node %s could not freeze volumes %v: %s", ErrUnavailable, nodeID, volumeIDs, res.GetError())
	}
	if err == nil {
		inSync = map[string][]string{}
		for _, f := range res.GetFrozen() {
			inSync[f.GetVolumeId()] = f.GetInSyncReplicaIds()
		}
		for _, id := range volumeIDs {
			if len(inSync[id]) == 0 {
				err = fmt.Errorf("%w: node %s answered freeze %s without volume %s", ErrUnavailable, nodeID, freezeID, id)
				break
			}
		}
	}
	if err != nil {
		if sent {
			go h.thawAfterFailure(nodeID, freezeID)
		}
		return "", nil, err
	}
	klog.InfoS("Froze volumes", "nodeID", nodeID, "freezeID", freezeID, "volumes", volumeIDs, "thawAfter", thawAfter)
	return freezeID, inSync, nil
}

// thawAfterFailure releases a freeze the caller gave up on: the node may
// have made it (its answer lost or late), and it would otherwise hold
// writes until thaw_after.
func (h *NodeHub) thawAfterFailure(nodeID, freezeID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Thaw(ctx, nodeID, freezeID); err != nil {
		klog.V(2).InfoS("Cannot thaw a failed freeze; the node thaws it by itself at thaw_after", "nodeID", nodeID, "freezeID", freezeID, "err", err)
	}
}

// Thaw releases the writes freeze freezeID holds on node nodeID and
// returns once they are released. A freeze the node no longer holds (it
// thawed by itself, or never made it) is success: Thaw is idempotent.
// Errors: ErrNodeNotConnected when the node has no stream open (it thaws
// by itself at thaw_after), ErrUnavailable when ctx ends first.
func (h *NodeHub) Thaw(ctx context.Context, nodeID, freezeID string) error {
	if freezeID == "" {
		return fmt.Errorf("%w: thaw of no freeze", ErrInvalidArgument)
	}
	cmd := &provisionerapi.NodeCommand{CommandId: h.newID("thw-"), Command: &provisionerapi.NodeCommand_Thaw{
		Thaw: &provisionerapi.ThawVolumes{FreezeCommandId: freezeID}}}
	res, _, err := h.do(ctx, nodeID, cmd)
	if err != nil {
		return err
	}
	if res.GetError() != "" {
		return fmt.Errorf("%w: node %s could not thaw freeze %s: %s", ErrUnavailable, nodeID, freezeID, res.GetError())
	}
	klog.InfoS("Thawed", "nodeID", nodeID, "freezeID", freezeID)
	return nil
}

// NodeCommands implements provisionerapi.ProvisionerServer: a node's
// command stream, open until the node goes, a newer stream of the node
// replaces it, or this provisioner stops leading (Unavailable: the node
// reconnects).
func (s *Server) NodeCommands(req *provisionerapi.NodeCommandsRequest, stream provisionerapi.Provisioner_NodeCommandsServer) error {
	if err := required("node_id", req.GetNodeId()); err != nil {
		return err
	}
	// Stream interceptors authorize before the first message, so the
	// table's scope check (ownNode) is made here on the request.
	if id, ok := rpcauth.IdentityFromContext(stream.Context()); ok {
		if err := ownNode(stream.Context(), id, provisionerapi.Provisioner_NodeCommands_FullMethodName, req); err != nil {
			return Status(err)
		}
	}
	err := s.svc.nodes.serve(stream.Context(), req.GetNodeId(), stream.Send)
	if errors.Is(err, context.Canceled) {
		return nil // the node went
	}
	return Status(err)
}

// ReportCommandResult implements provisionerapi.ProvisionerServer.
func (s *Server) ReportCommandResult(_ context.Context, req *provisionerapi.CommandResult) (*provisionerapi.ReportCommandResultResponse, error) {
	if err := required("node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	if err := required("command_id", req.GetCommandId()); err != nil {
		return nil, err
	}
	if err := s.svc.nodes.deliver(req); err != nil {
		return nil, Status(err)
	}
	return &provisionerapi.ReportCommandResultResponse{}, nil
}
