// Package volume is the node side's domain model of an nvmirror volume: the
// registry's record of a volume and its replicas as the CSI driver and the
// healer see it, the Provisioner they both talk to, the DH-HMAC-CHAP
// credentials a connection uses, the health a staged volume reports, and the
// sentinel errors every backend of the node side returns.
//
// It sits below pkg/driver (the CSI adapter), pkg/healer and
// pkg/provisionerclient, which all import it; it imports nothing of theirs,
// so a rule about volumes is written once and every caller reads the same
// types.
package volume
