package healer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/nvmirror/nvmirror/pkg/events"
)

// EventID is an event's unique, deterministic ID: a hash of its type,
// volume, node, storage nodes, replicas and time (not of its ID, nor of its
// message except for Session events, whose message names the controller and
// target: a replica connected through two controllers has two sessions that
// open and close in the same cycle). The same transition always yields the
// same ID, so the provisioner stores a resent event once.
func EventID(e events.Event) string {
	h := sha256.New()
	reps := slices.Clone(e.Replicas)
	sort.Strings(reps)
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00%s\x00%d", e.Type, e.Volume, e.Node, e.StorageNode, e.Replica,
		strings.Join(reps, ","), e.Time.UnixNano())
	if e.Type == events.SessionEstablished || e.Type == events.SessionClosed {
		fmt.Fprintf(h, "\x00%s", e.Message)
	}
	if e.Type == events.Audit {
		// Audit records of different calls may share a time and volume.
		fmt.Fprintf(h, "\x00%s\x00%s\x00%s", e.Method, e.Outcome, e.Message)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// StorageNodes splits an event's StorageNode field: events naming replicas
// on several storage nodes list them comma-separated.
func StorageNodes(e events.Event) []string {
	if e.StorageNode == "" {
		return nil
	}
	return strings.Split(e.StorageNode, ",")
}
