// Package agentapi is the gRPC API of the storage node agent
// (nvmirror-target, pkg/agent), generated from api/target/v1/target.proto
// by `make proto` (the generated files are committed; never edit them by
// hand). The Go package is named after the agent; the proto package
// (nvmirror.target.v1) and service (Target) keep their names, which are
// what goes on the wire.
package agentapi
