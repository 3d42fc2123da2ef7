// Package layout is the on-disk layout nvmirror gives its md arrays, as far
// as sizes go: how much of a replica md keeps for itself. The provisioner
// sizes replicas with it and the node creates arrays with it; it is a
// package of its own so the provisioner does not link the code that runs
// mdadm.
package layout

// MetadataReserve is the data offset nvmirror creates its arrays with: the
// md superblock (at 4 KiB) and the internal bitmap fit before it, and the
// array holds exactly a member's size minus this. The provisioner sizes
// every replica as the volume's size plus this reserve, so the md device
// has the capacity the volume promises. 4 MiB holds a bitmap of 32 Mi
// chunks: 32 TiB at 1 MiB chunks.
const MetadataReserve int64 = 4 << 20

// ReplicaSize is the size of each replica of a volume of volumeSize bytes.
func ReplicaSize(volumeSize int64) int64 { return volumeSize + MetadataReserve }
