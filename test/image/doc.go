// Package image holds the host tests of the container image, for machines
// without a Docker engine: the Dockerfile passes BuildKit's own parser and
// lint rules (hack/dockerfile-lint, a module of its own so BuildKit stays
// out of nvmirror's go.mod); the binaries build from exactly the files the
// build context holds (.dockerignore applied), by the Dockerfile's own
// `make image-binaries` command, as static ELF files, one per cmd/* but the
// kubectl plugin; and the runtime
// stage installs the Debian package of every program the code runs.
//
// Once `make images` has built them (hack/images.sh, docs/images.md), the
// images themselves are checked too, read from their docker-archive tars in
// pure Go: our image holds those commands as static binaries, every program
// the code runs in its PATH, runs as root with nvmirrorctl -h by default
// and carries its version; each single-binary image runs that binary, a
// static one, as its entrypoint; busybox has its applets. They skip without
// a build, and fail instead with NVMIRROR_REQUIRE_IMAGES=1 (`make unit`).
package image
