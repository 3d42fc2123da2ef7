package adminctl

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	api "github.com/nvmirror/nvmirror/pkg/provisionerapi"
)

// acceptDataLossFlag is the confirmation promote requires; named once
// because the refusal and the usage text must say the same thing.
const acceptDataLossFlag = "--accept-data-loss"

// promoteArgs is a parsed "promote VOLUME REPLICA... --accept-data-loss
// [--reason TEXT]".
type promoteArgs struct {
	volumeID       string
	replicaIDs     []string
	acceptDataLoss bool
	reason         string
}

// cmdPromote refuses without --accept-data-loss, saying what would be
// lost; with it, the provisioner marks the replicas in sync and audits it.
func cmdPromote(e cmdEnv) error {
	pa, err := parsePromote(e.args, e.stderr)
	if err != nil {
		return err
	}
	arg := pa.volumeID // as the user names it, for the hint
	if pa.volumeID, err = e.volume(arg); err != nil {
		return err
	}
	if !pa.acceptDataLoss {
		// Read only, to say what would be lost; a volume that cannot
		// be read is still refused, with less detail.
		resp, _ := e.c.GetVolume(e.ctx, &api.GetVolumeRequest{VolumeId: pa.volumeID})
		return promoteRefusal(pa, resp.GetVolume())
	}
	resp, err := e.c.PromoteReplicas(e.ctx, &api.PromoteReplicasRequest{VolumeId: pa.volumeID, ReplicaIds: pa.replicaIDs, AcceptDataLoss: true, Reason: pa.reason})
	if err != nil {
		return err
	}
	if e.json {
		return renderJSON(e.stdout, resp.GetVolume())
	}
	renderPromoted(e.stdout, pa, resp.GetVolume(), e.program+" events --volume "+arg+" --type Audit")
	return nil
}

// parsePromote reads promote's arguments. Flags may come before, between
// or after the IDs: the command is typed in an emergency, and refusing
// "promote vol r1 --accept-data-loss" over flag order would only add to it.
func parsePromote(args []string, stderr io.Writer) (promoteArgs, error) {
	var pa promoteArgs
	fs := flag.NewFlagSet("promote", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&pa.acceptDataLoss, strings.TrimPrefix(acceptDataLossFlag, "--"), false,
		"accept losing the writes acknowledged while the replicas were out of sync (required)")
	fs.StringVar(&pa.reason, "reason", "", "why, recorded in the audit event")
	pos, err := interspersed(fs, args)
	if err != nil {
		return pa, err
	}
	if len(pos) < 2 {
		return pa, usagef("promote takes VOLUME_ID REPLICA_ID [REPLICA_ID...] %s [--reason TEXT], got %d arguments", acceptDataLossFlag, len(pos))
	}
	pa.volumeID, pa.replicaIDs = pos[0], pos[1:]
	return pa, nil
}

// promoteRefusal explains what promoting would lose, from the volume as
// the registry holds it (nil when it could not be read).
func promoteRefusal(pa promoteArgs, v *api.Volume) error {
	var parts []string
	var earliest time.Time
	for _, id := range pa.replicaIDs {
		var r *api.Replica
		for _, cand := range v.GetReplicas() {
			if cand.GetId() == id {
				r = cand
			}
		}
		switch {
		case v == nil:
			parts = append(parts, id)
		case r == nil:
			parts = append(parts, id+" (not a replica of this volume)")
		case r.GetState() != api.ReplicaState_REPLICA_STATE_ACTIVE:
			parts = append(parts, fmt.Sprintf("%s (%s, not active)", id, replicaState(r.GetState())))
		case r.GetOutOfSyncSince() == nil:
			parts = append(parts, id+" (in sync)")
		default:
			t := r.GetOutOfSyncSince().AsTime()
			parts = append(parts, fmt.Sprintf("%s (%s)", id, syncState(r)))
			if earliest.IsZero() || t.Before(earliest) {
				earliest = t
			}
		}
	}
	lost := "every write acknowledged while these replicas were out of sync"
	if !earliest.IsZero() {
		lost += ", since " + earliest.UTC().Format(time.RFC3339)
	}
	return usagef("promote refused without %s: volume %s would start from replicas %s and lose %s; nothing was changed. "+
		"Promote only when the storage nodes of the in-sync replicas are gone for good",
		acceptDataLossFlag, pa.volumeID, strings.Join(parts, ", "), lost)
}

// renderPromoted says what was done and, in auditCmd, the command showing
// its audit record.
func renderPromoted(w io.Writer, pa promoteArgs, v *api.Volume, auditCmd string) {
	fmt.Fprintf(w, "volume %s: replicas %s are in sync now (data loss accepted; recorded as an Audit event: %s)\n",
		esc(v.GetId()), esc(strings.Join(pa.replicaIDs, ", ")), esc(auditCmd))
}
