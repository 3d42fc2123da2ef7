// Package deploy holds the host tests of the Kubernetes manifests under
// deploy/ and of the admin docs: every YAML document parses, every
// kustomization references files that exist and renders, every flag given
// to an nvmirror container (and every flag the docs name) exists in the
// binary it is given to and parses there, and the manifests keep the
// properties the node plugin, the provisioner and the agent depend on
// (privileges, host mounts, probes on the ports the flags open).
//
// Applying the manifests to a real API server is the e2e test's job; these
// tests need no cluster. Rendering uses `kubectl kustomize`, with the
// kubectl `make k8s-tools` builds (else one on PATH); without any the
// rendered checks skip, unless NVMIRROR_REQUIRE_KUBECTL=1 (set by `make
// unit`) makes them fail.
package deploy
