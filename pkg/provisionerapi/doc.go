// Package provisionerapi is the gRPC API of nvmirror-provisioner, generated
// from api/provisioner/v1/provisioner.proto by `make proto` (the generated
// files are committed; never edit them by hand).
package provisionerapi
