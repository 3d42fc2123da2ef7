// Package targetapi is the gRPC API of nvmirror-target, generated from
// api/target/v1/target.proto by `make proto` (the generated files are
// committed; never edit them by hand).
package targetapi
