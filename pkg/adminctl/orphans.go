package adminctl

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	api "github.com/nvmirror/nvmirror/pkg/provisionerapi"
)

// cmdOrphans lists the orphan replicas the provisioner's last scan found
// ("orphans"), or reclaims some at the administrator's command ("orphans
// reclaim REPLICA_ID...").
func cmdOrphans(e cmdEnv) error {
	if len(e.args) == 0 {
		resp, err := e.c.ListOrphans(e.ctx, &api.ListOrphansRequest{})
		if err != nil {
			return err
		}
		if e.json {
			return renderJSON(e.stdout, resp)
		}
		renderOrphans(e.stdout, resp, e.now)
		return nil
	}
	if e.args[0] != "reclaim" {
		return usagef("orphans: unknown subcommand %q (orphans, or orphans reclaim REPLICA_ID...)", e.args[0])
	}
	ids := e.args[1:]
	if len(ids) == 0 {
		return usagef("orphans reclaim: at least one REPLICA_ID is required (%s orphans lists them)", e.program)
	}
	// One at a time, each checked by the provisioner; a refusal does not
	// stop the others.
	var errs []error
	var done []*api.Orphan
	for _, id := range ids {
		resp, err := e.c.ReclaimOrphan(e.ctx, &api.ReclaimOrphanRequest{ReplicaId: id})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
			continue
		}
		done = append(done, resp.GetOrphan())
	}
	if e.json {
		if err := renderJSON(e.stdout, &api.ListOrphansResponse{Orphans: done}); err != nil {
			return err
		}
	} else {
		for _, o := range done {
			if o.GetStorageNode() == "" { // a retry of a reclaim that succeeded
				fmt.Fprintf(e.stdout, "reclaimed %s (already, earlier)\n", esc(o.GetReplicaId()))
				continue
			}
			fmt.Fprintf(e.stdout, "reclaimed %s (volume %s, %s) from storage node %s\n", esc(o.GetReplicaId()), esc(o.GetVolumeId()), esc(o.GetClass()), esc(o.GetStorageNode()))
		}
	}
	return errors.Join(errs...)
}

// reclaimWhen says when the scan reclaims an orphan, by its class.
func reclaimWhen(o *api.Orphan, now time.Time) string {
	switch o.GetClass() {
	case "released":
		if t := o.GetReclaimAfter(); t != nil {
			if d := t.AsTime().Sub(now); d > 0 {
				return "in " + d.Round(time.Second).String()
			}
			return "next scan"
		}
	case "unknown":
		return "by command only"
	}
	return "never"
}

func renderOrphans(w io.Writer, resp *api.ListOrphansResponse, now time.Time) {
	if resp.GetScannedAt() == nil {
		fmt.Fprintln(w, "No orphan scan yet by this leader (it scans every --orphan-scan-interval).")
	} else {
		fmt.Fprintf(w, "Last scan: %s ago.\n", now.Sub(resp.GetScannedAt().AsTime()).Round(time.Second))
	}
	if u := resp.GetUnreachableStorageNodes(); len(u) > 0 {
		fmt.Fprintf(w, "Storage nodes that did not answer it (their orphans are from earlier scans): %s\n", esc(fmt.Sprint(u)))
	}
	if len(resp.GetOrphans()) == 0 {
		fmt.Fprintln(w, "No orphan replicas.")
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPLICA\tSTORAGE NODE\tVOLUME\tSIZE\tCLASS\tFIRST SEEN\tRECLAIMED\tWHY")
	for _, o := range resp.GetOrphans() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", esc(o.GetReplicaId()), esc(o.GetStorageNode()), esc(orDash(o.GetVolumeId())), size(o.GetSizeBytes()),
			esc(o.GetClass()), since(o.GetFirstSeen(), o.GetFirstSeen() != nil, now), reclaimWhen(o, now), esc(o.GetReason()))
	}
	tw.Flush()
}
