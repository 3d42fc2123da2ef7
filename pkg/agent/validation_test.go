package agent

import (
	"testing"

	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
)

// The largest volume's replicas are sizes the agent accepts.
func TestLargestVolumeReplicaFits(t *testing.T) {
	if got := layout.ReplicaSize(layout.MaxVolumeSize); got > maxReplicaSize || got%BlockSize != 0 {
		t.Fatalf("replica of the largest volume: %d bytes, agent accepts at most %d in %d-byte blocks", got, int64(maxReplicaSize), BlockSize)
	}
}
