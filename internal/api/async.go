package api

import (
	"errors"
	"net/http"

	"github.com/gust-faas/gust/internal/async"
	"github.com/gust-faas/gust/internal/httperror"
)

func (a *API) invocation(w http.ResponseWriter, r *http.Request, c call) error {
	if r.Method != http.MethodGet {
		return httperror.MethodNotAllowed(w, r, "GET")
	}
	rec, err := a.Async.Get(r.Context(), c.tenant, r.PathValue("id"))
	if errors.Is(err, async.ErrNotFound) {
		return httperror.NotFound("invocation %q not found (records are kept for %s, or less on a server that holds more than its bound of records)", r.PathValue("id"), async.ResultTTL)
	}
	if err != nil {
		return err
	}
	return httperror.WriteJSON(w, http.StatusOK, rec)
}

// DeadLetters is the answer to GET /v1/functions/{name}/dlq.
type DeadLetters struct {
	DeadLetters []async.DeadLetter `json:"dead_letters"`
}

func (a *API) deadLetters(w http.ResponseWriter, r *http.Request, c call) error {
	if r.Method != http.MethodGet {
		return httperror.MethodNotAllowed(w, r, "GET")
	}
	name := r.PathValue("name")
	if _, ok := a.Registry.Get(c.tenant, name); !ok {
		return httperror.NotFound("function %q not found", name)
	}
	letters, err := a.Async.Dead(r.Context(), c.tenant, name, 1000)
	if err != nil {
		return err
	}
	return httperror.WriteJSON(w, http.StatusOK, DeadLetters{DeadLetters: append([]async.DeadLetter{}, letters...)})
}

// Replayed is the answer to POST /v1/functions/{name}/dlq/replay.
type Replayed struct {
	Replayed int `json:"replayed"`
}

func (a *API) replay(w http.ResponseWriter, r *http.Request, c call) error {
	if r.Method != http.MethodPost {
		return httperror.MethodNotAllowed(w, r, "POST")
	}
	name := r.PathValue("name")
	if _, ok := a.Registry.Get(c.tenant, name); !ok {
		return httperror.NotFound("function %q not found", name)
	}
	n, err := a.Async.Replay(r.Context(), c.tenant, name, r.URL.Query().Get("id"))
	if errors.Is(err, async.ErrNotFound) {
		return httperror.NotFound("%v", err)
	}
	if err != nil {
		return err
	}
	return httperror.WriteJSON(w, http.StatusOK, Replayed{Replayed: n})
}
