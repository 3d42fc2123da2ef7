// Package grpcerr turns the gRPC status errors of nvmirror's APIs back into
// a calling package's sentinel errors, so a client of the target or the
// provisioner API tests errors with errors.Is like those of any backend.
package grpcerr

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinels maps status codes to the caller's sentinel errors.
type Sentinels map[codes.Code]error

// Map returns err with the sentinel of its status code, keeping the
// server's message and naming the server (from). Errors that are not
// statuses, and codes without a sentinel (Internal, Unauthenticated,
// Canceled, ...), are returned unchanged, so callers pass them through.
func (s Sentinels) Map(err error, from string) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	sentinel, ok := s[st.Code()]
	if !ok {
		return err
	}
	return fmt.Errorf("%s: %s: %w", from, st.Message(), sentinel)
}
