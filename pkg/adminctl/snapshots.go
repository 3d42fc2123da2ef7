package adminctl

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	api "github.com/nvmirror/nvmirror/pkg/provisionerapi"
)

// cmdSnapshots lists the snapshots, all or those of one volume
// ("snapshots [VOLUME]").
func cmdSnapshots(e cmdEnv) error {
	if len(e.args) > 1 {
		return usagef("snapshots takes at most one %s, got %d arguments", e.volumeArg, len(e.args))
	}
	req := &api.ListSnapshotsRequest{MaxEntries: 500}
	if len(e.args) == 1 {
		id, err := e.volume(e.args[0])
		if err != nil {
			return err
		}
		req.SourceVolumeId = id
	}
	var snaps []*api.Snapshot
	for {
		resp, err := e.c.ListSnapshots(e.ctx, req)
		if err != nil {
			return err
		}
		snaps = append(snaps, resp.GetSnapshots()...)
		if req.StartingToken = resp.GetNextToken(); req.StartingToken == "" {
			break
		}
	}
	if e.json {
		return renderJSON(e.stdout, &api.ListSnapshotsResponse{Snapshots: snaps})
	}
	renderSnapshots(e.stdout, snaps, e.now)
	return nil
}

// cmdSnapshot shows one snapshot: where each copy lives and what it takes.
func cmdSnapshot(e cmdEnv) error {
	if len(e.args) != 1 {
		return usagef("snapshot takes one SNAPSHOT_ID, got %d arguments", len(e.args))
	}
	snap, err := e.c.GetSnapshot(e.ctx, &api.GetSnapshotRequest{SnapshotId: e.args[0]})
	if err != nil {
		return err
	}
	if e.json {
		return renderJSON(e.stdout, snap)
	}
	renderSnapshot(e.stdout, snap, e.now)
	return nil
}

// copies summarises a snapshot's copies: "2/3" complete of wanted.
func copies(s *api.Snapshot) string {
	ready := 0
	for _, c := range s.GetCopies() {
		if c.GetState() == "ready" {
			ready++
		}
	}
	return fmt.Sprintf("%d/%d", ready, s.GetWantCopies())
}

func allocated(s *api.Snapshot) int64 {
	var n int64
	for _, c := range s.GetCopies() {
		n += c.GetAllocatedBytes()
	}
	return n
}

func renderSnapshots(w io.Writer, snaps []*api.Snapshot, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SNAPSHOT\tNAME\tVOLUME\tSIZE\tALLOCATED\tCOPIES\tSTATE\tGROUP\tTAKEN")
	for _, s := range snaps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", esc(s.GetId()), esc(s.GetName()), esc(s.GetSourceVolumeId()), size(s.GetSizeBytes()),
			size(allocated(s)), copies(s), esc(orDash(s.GetState())), esc(orDash(s.GetGroupId())), since(s.GetCreated(), s.GetCreated() != nil, now))
	}
	tw.Flush()
}

func renderSnapshot(w io.Writer, s *api.Snapshot, now time.Time) {
	fmt.Fprintf(w, "Snapshot:      %s (%s)\n", esc(s.GetId()), esc(s.GetName()))
	fmt.Fprintf(w, "Source volume: %s\n", esc(s.GetSourceVolumeId()))
	fmt.Fprintf(w, "Size:          %s (restores into a volume at least this large)\n", size(s.GetSizeBytes()))
	fmt.Fprintf(w, "State:         %s (ready to use: %t)\n", esc(orDash(s.GetState())), s.GetReadyToUse())
	fmt.Fprintf(w, "Taken:         %s\n", since(s.GetCreated(), s.GetCreated() != nil, now))
	if s.GetGroupId() != "" {
		fmt.Fprintf(w, "Group:         %s\n", esc(s.GetGroupId()))
	}
	if len(s.GetParameters()) > 0 {
		var kv []string
		for k, v := range s.GetParameters() {
			kv = append(kv, esc(k)+"="+esc(v))
		}
		fmt.Fprintf(w, "Parameters:    %s\n", strings.Join(kv, " "))
	}
	fmt.Fprintf(w, "Copies:        %s complete (one per storage node; each holds the same data)\n", copies(s))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  STORAGE NODE\tSTATE\tALLOCATED\tSHARES BLOCKS (REFLINK)")
	for _, c := range s.GetCopies() {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%t\n", esc(c.GetStorageNode()), esc(c.GetState()), size(c.GetAllocatedBytes()), c.GetReflinked())
	}
	tw.Flush()
}
