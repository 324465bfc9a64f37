package client

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors, one per gRPC status code a call can end with. Every error the client returns for a
// failed call is an *Error that matches exactly one of them with errors.Is:
//
//	if errors.Is(err, client.ErrNotFound) { ... }
//
// Input the client refuses before sending (an empty key list, an int8 value of 300, ...) matches
// ErrInvalidArgument, as the server's refusal of the same input would.
var (
	ErrCanceled           = errors.New("canceled")
	ErrUnknown            = errors.New("unknown error")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrDeadlineExceeded   = errors.New("deadline exceeded")
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrPermissionDenied   = errors.New("permission denied")
	ErrResourceExhausted  = errors.New("resource exhausted")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrAborted            = errors.New("aborted")
	ErrOutOfRange         = errors.New("out of range")
	ErrUnimplemented      = errors.New("unimplemented")
	ErrInternal           = errors.New("internal error")
	ErrUnavailable        = errors.New("unavailable")
	ErrDataLoss           = errors.New("data loss")
	ErrUnauthenticated    = errors.New("unauthenticated")
)

// sentinels maps each status code to its sentinel (codes.OK has none).
var sentinels = map[codes.Code]error{
	codes.Canceled:           ErrCanceled,
	codes.Unknown:            ErrUnknown,
	codes.InvalidArgument:    ErrInvalidArgument,
	codes.DeadlineExceeded:   ErrDeadlineExceeded,
	codes.NotFound:           ErrNotFound,
	codes.AlreadyExists:      ErrAlreadyExists,
	codes.PermissionDenied:   ErrPermissionDenied,
	codes.ResourceExhausted:  ErrResourceExhausted,
	codes.FailedPrecondition: ErrFailedPrecondition,
	codes.Aborted:            ErrAborted,
	codes.OutOfRange:         ErrOutOfRange,
	codes.Unimplemented:      ErrUnimplemented,
	codes.Internal:           ErrInternal,
	codes.Unavailable:        ErrUnavailable,
	codes.DataLoss:           ErrDataLoss,
	codes.Unauthenticated:    ErrUnauthenticated,
}

// Error is a failed call: the gRPC status it ended with, the method and how many times it was sent.
// It matches its code's sentinel (ErrNotFound, ...) with errors.Is, and also context.DeadlineExceeded or
// context.Canceled for those codes; status.FromError and status.Code read its status.
type Error struct {
	// Code is the status code: the server's, or DeadlineExceeded / Canceled when the caller's context
	// ended first (possibly between retries).
	Code codes.Code
	// Method is the RPC, e.g. "RetrieveFeatures".
	Method string
	// Message is the server's status message (it names the entity, feature group, feature or key).
	Message string
	// Attempts is how many times the request was sent (retries on UNAVAILABLE included).
	Attempts int
	// cause is the last error from gRPC, when there was one.
	cause error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s: %s", e.Method, e.Code)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Attempts > 1 {
		msg += fmt.Sprintf(" (after %d attempts)", e.Attempts)
	}
	return msg
}

// Is matches the sentinel of e.Code, and the context errors for DeadlineExceeded and Canceled.
func (e *Error) Is(target error) bool {
	switch target {
	case sentinels[e.Code]:
		return true
	case context.DeadlineExceeded:
		return e.Code == codes.DeadlineExceeded
	case context.Canceled:
		return e.Code == codes.Canceled
	}
	return false
}

// Unwrap returns the underlying gRPC error (for a deadline that ran out between retries, the last
// UNAVAILABLE), or nil.
func (e *Error) Unwrap() error { return e.cause }

// GRPCStatus makes status.FromError and status.Code see e's code and message.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// invalid is an error for input refused before anything is sent.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgument, fmt.Sprintf(format, args...))
}

// callError turns what a gRPC call returned into an *Error.
func callError(method string, err error, attempts int) *Error {
	st, _ := status.FromError(err)
	return &Error{Code: st.Code(), Method: method, Message: st.Message(), Attempts: attempts, cause: err}
}

// BatchError is the failure of one batch of a call split into batches: the half-open range of the
// request's keys (or persist rows) it held. Other batches of the same call may have succeeded; a failed
// persist batch wrote nothing (the server writes each request whole). Unwrap gives the batch's *Error.
type BatchError struct {
	Start, End int
	Err        error
}

func (e *BatchError) Error() string {
	return fmt.Sprintf("batch of rows [%d, %d): %v", e.Start, e.End, e.Err)
}

func (e *BatchError) Unwrap() error { return e.Err }
