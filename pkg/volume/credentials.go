package volume

import "github.com/nvmirror/nvmirror/pkg/storageclass"

// Credentials are the DH-HMAC-CHAP secrets between this node's host and one
// storage node, in the NVMe "DHHC-1:" form. Never log them.
type Credentials struct {
	StorageNode string
	// Secret is the host's key; CtrlSecret the storage node's, used only
	// by volumes with bidirectional authentication.
	Secret, CtrlSecret string
	Generation         int64
}

// ConnectSecrets returns the secrets a connection to storageNode uses, for a
// volume of authentication mode auth: the pair's host secret whenever the
// pair has one, whatever the mode (the kernel target keeps secrets per host,
// so it demands them from this host for every replica on that storage
// node), and the controller secret (the host checks the storage node) only
// for bidirectional volumes. ok is false when the pair has no secrets; a
// volume requiring authentication must then not connect at all. NodeStage
// and the healer's reconnects both use it.
func ConnectSecrets(creds []Credentials, storageNode string, auth storageclass.Authentication) (secret, ctrlSecret string, ok bool) {
	for _, c := range creds {
		if c.StorageNode != storageNode || c.Secret == "" {
			continue
		}
		if auth == storageclass.AuthBidirectional {
			return c.Secret, c.CtrlSecret, true
		}
		return c.Secret, "", true
	}
	return "", "", false
}
