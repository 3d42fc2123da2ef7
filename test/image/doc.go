// Package image holds the host tests of the container image, for machines
// without a Docker engine: the Dockerfile passes BuildKit's own parser and
// lint rules (hack/dockerfile-lint, a module of its own so BuildKit stays
// out of nvmirror's go.mod); the binaries build from exactly the files the
// build context holds (.dockerignore applied), by the Dockerfile's own
// `make build` command, as static ELF files, one per cmd/*; and the runtime
// stage installs the Debian package of every program the code runs.
package image
