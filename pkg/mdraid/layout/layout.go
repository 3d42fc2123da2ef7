// Package layout is the on-disk layout nvmirror gives its md arrays, as far
// as sizes go: how much of a replica md keeps for itself, the unit volume
// sizes are rounded to and the largest volume. The provisioner sizes
// replicas with it and the node creates arrays with it; it is a package of
// its own so the provisioner does not link the code that runs mdadm.
package layout

// MetadataReserve is the data offset nvmirror creates its arrays with: the
// md superblock (at 4 KiB) and the internal bitmap fit before it, and the
// array holds exactly a member's size minus this. The provisioner sizes
// every replica as the volume's size plus this reserve, so the md device
// has the capacity the volume promises. 4 MiB holds a bitmap of 32 Mi
// chunks: 32 TiB at 1 MiB chunks.
const MetadataReserve int64 = 4 << 20

// Alignment is the unit of volume sizes: every volume is a whole number of
// MiB, the unit storage nodes allocate and md aligns its data offset to
// (agents need multiples of 4 KiB; MiB keeps the sizes users see round).
const Alignment int64 = 1 << 20

// MaxVolumeSize is the largest volume: 1 EiB less MetadataReserve, so its
// replicas (ReplicaSize) are at most the 1 EiB a storage node agent accepts.
// Far beyond any storage node's pool, a whole number of Alignment, and low
// enough that rounding a size up to Alignment and adding MetadataReserve
// can never overflow an int64 (which a size near 2^63 did, wrapping to a
// tiny volume). A size above it is refused (OutOfRange), never rounded.
const MaxVolumeSize int64 = 1<<60 - MetadataReserve

// ReplicaSize is the size of each replica of a volume of volumeSize bytes.
func ReplicaSize(volumeSize int64) int64 { return volumeSize + MetadataReserve }
