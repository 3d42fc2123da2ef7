// Package grpcerr is where sentinel errors and gRPC status codes meet, both
// ways: a server maps its backends' sentinel errors to the codes its callers
// act on (Codes), and a client maps the codes of nvmirror's APIs back to its
// own sentinels (Sentinels), so it tests errors with errors.Is like those of
// any backend. Each package declares its table; the mechanism is here once.
package grpcerr

import (
	"errors"
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

// Rule gives Code to errors that match (errors.Is) any of Errs.
type Rule struct {
	Code codes.Code
	Errs []error
}

// To is the rule giving code to errs.
func To(code codes.Code, errs ...error) Rule { return Rule{Code: code, Errs: errs} }

// Codes maps a server's errors to status codes: the first rule an error
// matches gives its code, so a table orders its rules where an error may
// wrap two sentinels. An error matching none is Internal.
type Codes []Rule

// Code returns err's status code: OK for nil, a status error's own code,
// else the table's.
func (c Codes) Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	for _, r := range c {
		for _, e := range r.Errs {
			if errors.Is(err, e) {
				return r.Code
			}
		}
	}
	return codes.Internal
}

// Status returns err as a status error: nil stays nil, a status error
// passes unchanged, any other error gets the table's code and keeps its
// whole message, which names the object concerned.
func (c Codes) Status(err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	return status.Error(c.Code(err), err.Error())
}
