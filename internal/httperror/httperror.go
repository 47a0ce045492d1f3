// Package httperror is how every Gust endpoint fails: handlers return an
// error, and one adapter writes it as a status and a JSON body
// {"error": {"code": "...", "message": "..."}}, logging what the caller must
// not see.
package httperror

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
)

// HeaderError carries the error code on every error Gust itself answers, so
// a client can tell Gust's errors from a function's own error responses.
const HeaderError = "X-Gust-Error"

// Error is an error with the HTTP status and code a client should see.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// Stderr is the last lines a failed function wrote to stderr.
	Stderr string `json:"stderr,omitempty"`
	// Cause is logged, never sent.
	Cause error `json:"-"`
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Cause)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Cause }

// New returns an *Error with a formatted message.
func New(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Common errors.
func NotFound(format string, args ...any) *Error {
	return New(http.StatusNotFound, "not_found", format, args...)
}

func BadRequest(format string, args ...any) *Error {
	return New(http.StatusBadRequest, "bad_request", format, args...)
}

// Unauthorized answers a request without a valid API key, never saying
// which part of the key was wrong.
func Unauthorized(w http.ResponseWriter) *Error {
	w.Header().Set("WWW-Authenticate", `Bearer realm="gust"`)
	return New(http.StatusUnauthorized, "unauthorized", "missing or invalid API key: send one as 'Authorization: Bearer <key>'")
}

// MethodNotAllowed sets the Allow header and returns a 405 error.
func MethodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) *Error {
	w.Header().Set("Allow", allow)
	return New(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed here; use %s", r.Method, allow)
}

// Write sends err to the client. An error that is not an *Error becomes a
// 500 whose cause is logged and not sent. attrs are added to the log line.
func Write(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error, attrs ...any) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error; the server log has the details", Cause: err}
	}
	attrs = append(attrs, "method", r.Method, "path", r.URL.Path, "status", e.Status, "code", e.Code)
	if e.Status >= 500 {
		log.Error(e.Message, append(attrs, "err", e.Cause)...)
	} else {
		log.Info(e.Message, attrs...)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set(HeaderError, e.Code)
	h.Del("Content-Length")
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(struct {
		Error *Error `json:"error"`
	}{e})
}

// Handler adapts a function that returns an error to an http.Handler.
func Handler(log *slog.Logger, fn func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			Write(w, r, log, err)
		}
	})
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
