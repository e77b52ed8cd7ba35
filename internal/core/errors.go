// Package core holds what every other package shares: the error kinds, name and
// size rules, and identifiers. It imports the standard library only.
//
// Errors carry a Kind. Lower layers create them with the constructors below and
// upper layers add context with fmt.Errorf("...: %w", err); exactly one place
// turns a Kind into an HTTP status (httpapi) and one into an exit code (cli).
package core

import (
	"errors"
	"fmt"
)

// Kind classifies an error for the API and the CLI.
type Kind int

const (
	KindInternal     Kind = iota // anything unexpected: status 500, exit 1
	KindInvalid                  // bad input: 400, exit 2
	KindNotFound                 // unknown or not visible: 404, exit 3
	KindConflict                 // conflicts with state or another task: 409, exit 4
	KindUnauthorized             // no or bad credentials: 401, exit 6
	KindForbidden                // authenticated but not allowed: 403, exit 6
	KindCorrupt                  // data failed a check: 422, exit 7
	KindTaskFailed               // the task ran and failed: exit 5
)

// Error is an error with a kind and a stable machine-readable code
// (for example "not_found", "nothing_to_revert", "limit_reached").
type Error struct {
	Kind    Kind
	Code    string
	Message string
	Err     error // optional wrapped cause
}

func (e *Error) Error() string {
	if e.Err != nil && e.Message == "" {
		return e.Err.Error()
	}
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// E builds an Error of the given kind and code with a formatted message.
func E(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid reports bad input.
func Invalid(format string, args ...any) *Error {
	return E(KindInvalid, "invalid", format, args...)
}

// NotFound reports something that does not exist or that the caller may not see.
func NotFound(format string, args ...any) *Error {
	return E(KindNotFound, "not_found", format, args...)
}

// Conflict reports a request that conflicts with the state of a resource.
func Conflict(code, format string, args ...any) *Error {
	return E(KindConflict, code, format, args...)
}

// Corrupt reports data that failed a check.
func Corrupt(format string, args ...any) *Error {
	return E(KindCorrupt, "corrupt", format, args...)
}

// WrongPassword reports a password that no key of a repository accepts
// (code "wrong_password", kind unauthorized).
func WrongPassword(format string, args ...any) *Error {
	return E(KindUnauthorized, CodeWrongPassword, format, args...)
}

// CodeWrongPassword is the code of WrongPassword's errors.
const CodeWrongPassword = "wrong_password"

// Unauthorized reports missing or wrong credentials.
func Unauthorized(format string, args ...any) *Error {
	return E(KindUnauthorized, "unauthorized", format, args...)
}

// Forbidden reports a caller whose role does not allow the action.
func Forbidden(format string, args ...any) *Error {
	return E(KindForbidden, "forbidden", format, args...)
}

// KindOf returns the kind of the first *Error in err's chain, or KindInternal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// CodeOf returns the code of the first *Error in err's chain, or "internal".
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Code != "" {
		return e.Code
	}
	return "internal"
}

// IsNotFound reports whether err is of KindNotFound.
func IsNotFound(err error) bool { return err != nil && KindOf(err) == KindNotFound }
