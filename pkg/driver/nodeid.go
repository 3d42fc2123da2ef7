package driver

import (
	"fmt"
	"strings"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// The CSI node ID is "<node name>/<host NQN>".
//
// ControllerPublishVolume must allow the node's host NQN on every replica,
// and the controller sees nothing of the node but the ID NodeGetInfo
// returned (accessible topology is only for scheduling, and the publish
// context flows the other way). Carrying the NQN in the ID keeps the
// controller free of any node registry. The node name in front keeps IDs
// readable in VolumeAttachments, audit records and ListVolumes'
// published_node_ids. '/' separates them because neither a Kubernetes node
// name nor an NQN accepted by nvmeof.ValidateNQN can contain it.
// Kubernetes limits node IDs to 192 bytes; a uuid NQN is 68, which leaves
// 123 for the node name.

// nodeIDSeparator splits the node name from the host NQN (pkg/volume
// holds it: the provisioner reads node names out of node IDs too).
const nodeIDSeparator = volume.NodeIDSeparator

// encodeNodeID builds the node ID, refusing one Kubernetes would reject.
func encodeNodeID(nodeName, hostNQN string) (string, error) {
	if nodeName == "" || strings.Contains(nodeName, nodeIDSeparator) {
		return "", fmt.Errorf("node name %q: must be non-empty and contain no %q", nodeName, nodeIDSeparator)
	}
	if err := nvmeof.ValidateNQN(hostNQN); err != nil {
		return "", err
	}
	id := nodeName + nodeIDSeparator + hostNQN
	if len(id) > maxNodeIDLength {
		return "", fmt.Errorf("node ID %q is %d bytes, Kubernetes accepts at most %d: shorten the node name or the host NQN", id, len(id), maxNodeIDLength)
	}
	return id, nil
}

// parseNodeID returns the host NQN of a node ID. An ID this driver did not
// issue is ErrNotFound: CSI wants NotFound for an unknown node.
func parseNodeID(id string) (nodeName, hostNQN string, err error) {
	nodeName, hostNQN, ok := volume.SplitNodeID(id)
	if !ok || nodeName == "" {
		return "", "", volume.Errorf(volume.ErrNotFound, "node %q (not an nvmirror node ID <node>/<host NQN>)", id)
	}
	if err := nvmeof.ValidateNQN(hostNQN); err != nil {
		return "", "", volume.Errorf(volume.ErrNotFound, "node %q (host NQN: %v)", id, err)
	}
	return nodeName, hostNQN, nil
}
