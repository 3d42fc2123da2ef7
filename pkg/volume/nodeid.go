package volume

import "strings"

// NodeIDSeparator splits a CSI node ID "<node name>/<host NQN>" (the
// driver's NodeGetInfo) into the Kubernetes node name and the node's host
// NQN. Neither a node name nor a valid NQN contains it.
const NodeIDSeparator = "/"

// SplitNodeID returns the node name and host NQN of a CSI node ID; an ID
// without the separator is a bare node name (hostNQN "", ok false).
func SplitNodeID(id string) (nodeName, hostNQN string, ok bool) {
	return strings.Cut(id, NodeIDSeparator)
}
