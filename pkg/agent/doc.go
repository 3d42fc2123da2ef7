// Package agent is nvmirror-target, the storage node agent: it keeps
// replicas as files in a pool directory (pool.go), exports each as its own
// NVMe-oF subsystem through the kernel target (an Exporter, in production
// *nvmet.Target), persists what it holds in a state file (state.go) and
// serves the provisioner's gRPC API (server.go, api/target/v1/target.proto).
//
// # Replicas
//
// Replica r is the file <pool>/r.img (sparse for thin, fallocated for
// thick), exported as subsystem <nqn-prefix>r with namespace 1, whose UUID,
// NGUID and serial derive from r (nvmeof.NamespaceUUID and friends), on every
// port of the agent. attr_allow_any_host is 0: only hosts added with
// AllowHost (or at creation) can connect.
//
// # Snapshots
//
// Snapshot s is <pool>/snapshots/s.snap with its record s.json; a copy
// being made or received is .s.part and becomes the snapshot only by
// rename. Copies are reflinks (FICLONE) where the filesystem can, sparse
// copies otherwise (snapshotcopy.go); SnapshotRanges compares two
// snapshots by FIEMAP and content (snapshotranges.go); the md superblock
// of a replica or copy is read by pkg/mdraid/superblock. See
// docs/nvmirror-target.md#snapshots.
//
// # Crash safety
//
// The state file is the agent's truth; configfs is rebuilt from it on every
// start (after a reboot configfs is empty). Each operation records its intent
// in the state file before it changes the system and removes the record only
// after the system change is done, so a crash between any two steps is
// completed by repeating the call or by the next start. The step order of
// each operation is documented on its method in replicas.go, hosts.go and
// reconcile.go. Exports under the agent's NQN prefix that the state does not
// list are removed at start; other subsystems are never touched. A ready
// replica whose backing file is missing is not re-created empty (that would
// hand zeros to md as if they were data): it stays unexported and Start
// reports it.
//
// # What the agent can observe of host sessions
//
// Linux 6.1's nvmet configfs has no per-connection information: a
// subsystem directory holds allowed_hosts, attributes and namespaces, and
// a port lists the subsystems it exports; nothing says which host is
// connected. What the kernel does expose:
//   - kernel log (/dev/kmsg), checked on 6.1 in the VM test:
//     "nvmet: creating nvm controller N for subsystem S for NQN H." when a
//     host connects, and "nvmet: connect by host H for subsystem S not
//     allowed" when a connect is refused. Nothing is logged when a session
//     closes (none appeared in the VM test after disconnects and session
//     cuts; only pr_debug output with dynamic debug might), so "session
//     closed" is not observable there.
//   - newer kernels have an nvmet debugfs interface
//     (CONFIG_NVME_TARGET_DEBUGFS, from 2024) with per-controller entries;
//     it is absent on 6.1 (checked in the VM test) and debugfs is not a
//     stable interface.
//
// The agent reports what is observable: SessionWatcher follows /dev/kmsg
// (flag --kmsg-path) and turns the two messages above, for subsystems under
// its prefix, into audit log lines ("Audit: NVMe-oF session established",
// "Audit: NVMe-oF connection refused"); the VM test checks both. Session
// close is not reported: 6.1 does not say when it happens. Caveats: the
// kernel log is a ring buffer (a burst can overwrite records before they
// are read: reads then fail with EPIPE and the agent skips ahead), events
// from before the agent started are not replayed, and the message texts
// are not a kernel ABI (ParseKmsgRecord's tests pin the 6.1 wording). The
// provisioner's event intake does not exist yet; the sink is a log line
// until it does.
//
// # Revoking a host
//
// The kernel checks allowed_hosts only when a controller connects, so
// RevokeHost removes the host and then cuts every session of the replica
// (nvmet.Target.CutSessions unlinks and relinks the subsystem's ports). The
// hosts still allowed reconnect (reconnect_delay); the revoked host's
// reconnects are refused. A pending cut is recorded in the state file, so a
// crash between revoke and cut is repaired at the next start.
package agent
