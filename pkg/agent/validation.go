package agent

import (
	"regexp"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

// replicaIDPattern: lowercase letters, digits and dashes, starting with a
// letter or digit, at most 63 characters. A replica ID becomes a file name
// in the pool and part of an NQN, so this excludes '/', '.', "..", NUL and
// anything else that could escape the pool directory or the NQN grammar.
var replicaIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// volumeIDPattern is looser (the provisioner's volume IDs may carry dots,
// underscores and capitals) but still a plain token: it is only stored and
// reported, never used in a path.
var volumeIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// maxReplicaSize bounds sizes to something a file can be (and that cannot
// overflow when sizes are added up): 1 EiB.
const maxReplicaSize = 1 << 60

func validateReplicaID(id string) error {
	if id == "" {
		return fieldError("replica_id", "required")
	}
	if !replicaIDPattern.MatchString(id) {
		return fieldError("replica_id", "%q must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit", id)
	}
	return nil
}

// validateSnapshotID: a snapshot ID follows the replica ID rules (it is a
// file name in the pool's snapshot directory); field is its API name.
func validateSnapshotID(field, id string) error {
	if id == "" {
		return fieldError(field, "required")
	}
	if !replicaIDPattern.MatchString(id) {
		return fieldError(field, "%q must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit", id)
	}
	return nil
}

func validateVolumeID(id string) error {
	if id == "" {
		return fieldError("volume_id", "required")
	}
	if !volumeIDPattern.MatchString(id) {
		return fieldError("volume_id", "%q must be 1-128 characters of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit", id)
	}
	return nil
}

func validateSize(size int64) error { return validateSizeField("size_bytes", size) }

func validateSizeField(field string, size int64) error {
	switch {
	case size <= 0:
		return fieldError(field, "%d must be positive", size)
	case size%BlockSize != 0:
		return fieldError(field, "%d is not a multiple of %d", size, BlockSize)
	case size > maxReplicaSize:
		return fieldError(field, "%d exceeds the maximum %d", size, int64(maxReplicaSize))
	}
	return nil
}

func validateProvisioning(p Provisioning) error {
	if p != Thin && p != Thick {
		return fieldError("provisioning_type", "must be thin or thick")
	}
	return nil
}

func validateHostNQN(field, nqn string) error {
	if nqn == "" {
		return fieldError(field, "required")
	}
	if err := nvmeof.ValidateNQN(nqn); err != nil {
		return fieldError(field, "%v", err)
	}
	if nqn == nvmeof.DiscoveryNQN {
		return fieldError(field, "the discovery NQN is not a host NQN")
	}
	return nil
}
