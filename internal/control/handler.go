// SPDX-License-Identifier: AGPL-3.0-only

package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
)

// route is one path of the API.
type route struct {
	method string
	name   string   // in error messages: "flows", "rib lookup"
	params []string // query parameters it takes
	body   bool     // takes a JSON body
	serve  func(ctx context.Context, a Agent, q map[string]string, body []byte) (any, error)
}

// routes are the API's paths; docs/api.md describes each.
var routes = map[string]route{
	PathStatus: {method: http.MethodGet, name: "status", serve: func(ctx context.Context, a Agent, _ map[string]string, _ []byte) (any, error) {
		return a.Status(ctx)
	}},
	PathFlows: {method: http.MethodGet, name: "flows", params: []string{"top", "sort", "iface"}, serve: serveFlows},
	PathRIBSummary: {method: http.MethodGet, name: "rib summary", serve: func(ctx context.Context, a Agent, _ map[string]string, _ []byte) (any, error) {
		return a.RIBSummary(ctx)
	}},
	PathRIBLookup:  {method: http.MethodGet, name: "rib lookup", params: []string{"addr"}, serve: serveRIBLookup},
	PathSampleRate: {method: http.MethodPut, name: "sample-rate", body: true, serve: serveSampleRate},
	PathReload: {method: http.MethodPost, name: "reload", serve: func(ctx context.Context, a Agent, _ map[string]string, _ []byte) (any, error) {
		return a.Reload(ctx)
	}},
}

// paths lists the routes for the 404 answer, in a fixed order.
var paths = []string{PathStatus, PathFlows, PathRIBSummary, PathRIBLookup, PathSampleRate, PathReload}

// badParam is a 400 answer about one input.
func badParam(param, value, msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Message: msg, Parameter: param, Value: &value}
}

func serveFlows(ctx context.Context, a Agent, q map[string]string, _ []byte) (any, error) {
	var args FlowsArgs
	if v, ok := q["top"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, badParam("top", v, fmt.Sprintf("flows: top %q: want a whole number, 0 for every flow", v))
		}
		args.Top = n
	}
	if v, ok := q["sort"]; ok {
		if v != "bytes" && v != "packets" {
			return nil, badParam("sort", v, fmt.Sprintf("flows: sort %q: want bytes or packets", v))
		}
		args.Sort = v
	}
	args.Iface = q["iface"]
	return a.Flows(ctx, args)
}

func serveRIBLookup(ctx context.Context, a Agent, q map[string]string, _ []byte) (any, error) {
	v, ok := q["addr"]
	if !ok {
		return nil, badParam("addr", "", "rib lookup: parameter addr missing (want ?addr=ADDRESS)")
	}
	addr, err := netip.ParseAddr(v)
	if err != nil {
		return nil, badParam("addr", v, fmt.Sprintf("rib lookup: address %q: not an IPv4 or IPv6 address", v))
	}
	return a.RIBLookup(ctx, addr.WithZone("")) // routes have no zone
}

func serveSampleRate(ctx context.Context, a Agent, _ map[string]string, body []byte) (any, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, badParam("body", clip(string(body)), fmt.Sprintf(`sample-rate: body %q: want a JSON object such as {"rate": 10}`, clip(string(body))))
	}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		switch {
		case k == "":
			return nil, badParam("body", clip(string(body)), `sample-rate: a field without a name (the body has one field, rate)`)
		case k != "rate":
			return nil, badParam(k, clip(string(fields[k])), fmt.Sprintf("sample-rate: unknown field %q (the body has one field, rate)", k))
		}
	}
	raw, ok := fields["rate"]
	if !ok {
		return nil, badParam("rate", "", `sample-rate: rate missing (want {"rate": N})`)
	}
	// The token itself: a JSON number without fraction or exponent that
	// fits 32 bits; "10", 10.0 and 1e1 are refused.
	rate, err := strconv.ParseUint(string(raw), 10, 32)
	if err != nil || rate < 1 {
		return nil, badParam("rate", clip(string(raw)), fmt.Sprintf("sample-rate: rate %s: want a whole number from 1 to 4294967295", clip(string(raw))))
	}
	return a.SetSampleRate(ctx, uint32(rate))
}

// clip shortens an input echoed in an error answer.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// handler answers the API's requests from an Agent.
type handler struct {
	a       Agent
	log     *slog.Logger
	timeout time.Duration // of one Agent call
}

func newHandler(a Agent, log *slog.Logger, timeout time.Duration) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &handler{a: a, log: log, timeout: timeout}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	status := h.serve(w, r)
	h.log.Debug("control request", "method", r.Method, "path", r.URL.Path, "status", status, "took", time.Since(start))
}

// serve answers r and returns the status it answered with.
func (h *handler) serve(w http.ResponseWriter, r *http.Request) int {
	rt, ok := routes[r.URL.Path]
	if !ok {
		return writeError(w, notFound(r.URL.Path))
	}
	if r.Method != rt.method {
		w.Header().Set("Allow", rt.method)
		return writeError(w, &Error{Status: http.StatusMethodNotAllowed,
			Message: fmt.Sprintf("%s: method %s not allowed; use %s %s", rt.name, r.Method, rt.method, r.URL.Path)})
	}
	q, e := readQuery(rt, r.URL.RawQuery)
	if e != nil {
		return writeError(w, e)
	}
	var body []byte
	if r.Method != http.MethodGet {
		var err error
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
		var tooLong *http.MaxBytesError
		switch {
		case errors.As(err, &tooLong):
			return writeError(w, &Error{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("%s: body longer than %d bytes", rt.name, MaxBodyBytes)})
		case err != nil:
			return writeError(w, &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("%s: reading the body: %v", rt.name, err)})
		case !rt.body && len(body) > 0:
			return writeError(w, badParam("body", clip(string(body)), fmt.Sprintf("%s: takes no body; got %d bytes", rt.name, len(body))))
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	data, err := h.call(ctx, rt, q, body)
	if err != nil {
		return writeError(w, agentError(rt, err, h.timeout))
	}
	return writeJSON(w, http.StatusOK, data)
}

// readQuery checks the query against the parameters rt takes: each at
// most once, none other.
func readQuery(rt route, raw string) (map[string]string, *Error) {
	values, err := url.ParseQuery(raw)
	if err != nil {
		return nil, badParam("query", clip(raw), fmt.Sprintf("%s: query %q: %v", rt.name, clip(raw), err))
	}
	q := make(map[string]string, len(values))
	for _, k := range slices.Sorted(maps.Keys(values)) {
		v := values[k]
		switch {
		case k == "":
			return nil, badParam("query", clip(raw), fmt.Sprintf("%s: query %q: a parameter without a name", rt.name, clip(raw)))
		case !slices.Contains(rt.params, k) && len(rt.params) == 0:
			return nil, badParam(k, clip(v[0]), fmt.Sprintf("%s: unknown parameter %q (it takes none)", rt.name, k))
		case !slices.Contains(rt.params, k):
			return nil, badParam(k, clip(v[0]), fmt.Sprintf("%s: unknown parameter %q (want %s)", rt.name, k, strings.Join(rt.params, ", ")))
		case len(v) > 1:
			return nil, badParam(k, clip(v[1]), fmt.Sprintf("%s: parameter %s given %d times", rt.name, k, len(v)))
		}
		q[k] = v[0]
	}
	return q, nil
}

// call runs the route's Agent method. A panic in the Agent becomes a 500
// answer rather than taking the agent down.
func (h *handler) call(ctx context.Context, rt route, q map[string]string, body []byte) (data any, err error) {
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("control request panicked", "path", rt.name, "panic", p, "stack", string(debug.Stack()))
			data, err = nil, &Error{Status: http.StatusInternalServerError, Message: fmt.Sprintf("%s: internal error in the agent (logged)", rt.name)}
		}
	}()
	return rt.serve(ctx, h.a, q, body)
}

// agentError is the answer for an error of a route: an *Error keeps its
// status, the context's errors are 503, anything else is 500.
func agentError(rt route, err error, timeout time.Duration) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		if e.Status == 0 {
			c := *e
			c.Status = http.StatusInternalServerError
			return &c
		}
		return e
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Status: http.StatusServiceUnavailable, Message: fmt.Sprintf("%s: no answer from the agent within %s", rt.name, timeout)}
	case errors.Is(err, context.Canceled):
		return &Error{Status: http.StatusServiceUnavailable, Message: fmt.Sprintf("%s: cancelled: the agent is stopping or the client went away", rt.name)}
	}
	return &Error{Status: http.StatusInternalServerError, Message: err.Error()}
}

// notFound answers a path the API does not have, naming the version the
// agent serves when the path asks for another.
func notFound(path string) *Error {
	first, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if len(first) > 1 && first[0] == 'v' && first != APIVersion && strings.Trim(first[1:], "0123456789") == "" {
		return &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("API version %s not served: this agent serves %s (use the rfm binary matching the agent)", first, APIVersion)}
	}
	return &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no such path %q; this agent serves %s", clip(path), strings.Join(paths, ", "))}
}

// writeJSON answers v as one line of JSON.
func writeJSON(w http.ResponseWriter, status int, v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		return writeError(w, &Error{Status: http.StatusInternalServerError, Message: fmt.Sprintf("encoding the answer: %v", err)})
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
	return status
}

func writeError(w http.ResponseWriter, e *Error) int {
	status := e.Status
	if status == 0 {
		status = http.StatusInternalServerError
	}
	return writeJSON(w, status, e)
}
