// Package version holds the build's version, injected by the Makefile with
// -ldflags "-X github.com/nvmirror/nvmirror/pkg/version.Version=...". CSI's
// GetPluginInfo must not return an empty version, hence the default.
package version

// Version of this build.
var Version = "dev"
