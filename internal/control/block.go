// SPDX-License-Identifier: AGPL-3.0-only

package control

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath/xdp"
)

// Paths of the live blocklist (`rfm block`).
const (
	PathBlocklist    = "/" + APIVersion + "/blocklist"
	PathBlocklistAdd = "/" + APIVersion + "/blocklist/add"
	PathBlocklistDel = "/" + APIVersion + "/blocklist/del"
)

// Blocker is what the blocklist paths need from the agent. An Agent
// without it answers them with 400: the XDP fast path is off.
type Blocker interface {
	BlockList(ctx context.Context) (Blocklist, error)
	BlockAdd(ctx context.Context, args BlockAddArgs) (BlockEntry, error)
	BlockDel(ctx context.Context, prefix netip.Prefix) (BlockDelResult, error)
}

// BlockAddArgs is the body of POST /v1/blocklist/add.
type BlockAddArgs struct {
	Prefix netip.Prefix `json:"prefix"`
	// For is how long the entry stays; 0: until removed.
	For    time.Duration `json:"-"`
	Reason string        `json:"reason,omitempty"`
}

// BlockEntry is one entry of the live blocklist.
type BlockEntry struct {
	Prefix  string     `json:"prefix"`
	Added   time.Time  `json:"added"`
	Expires *time.Time `json:"expires,omitempty"`
	Reason  string     `json:"reason,omitempty"`
}

// Blocklist answers GET /v1/blocklist.
type Blocklist struct {
	Entries []BlockEntry `json:"entries"`
}

// BlockDelResult answers POST /v1/blocklist/del.
type BlockDelResult struct {
	Prefix  string `json:"prefix"`
	Removed bool   `json:"removed"` // false: it was not on the list
}

// EntryOf converts an xdp.Entry for an answer.
func EntryOf(e xdp.Entry) BlockEntry {
	out := BlockEntry{Prefix: e.Prefix.String(), Added: e.Added, Reason: e.Reason}
	if !e.Expires.IsZero() {
		t := e.Expires
		out.Expires = &t
	}
	return out
}

// BlockListCall lists the live blocklist.
func BlockListCall() Call { return Call{Method: http.MethodGet, Path: PathBlocklist} }

// BlockAddCall puts a prefix on the live blocklist for d (0: until removed).
func BlockAddCall(p netip.Prefix, d time.Duration, reason string) Call {
	body := map[string]any{"prefix": p.String()}
	if d > 0 {
		body["for"] = d.String()
	}
	if reason != "" {
		body["reason"] = reason
	}
	return Call{Method: http.MethodPost, Path: PathBlocklistAdd, Body: body}
}

// BlockDelCall removes a prefix from the live blocklist.
func BlockDelCall(p netip.Prefix) Call {
	return Call{Method: http.MethodPost, Path: PathBlocklistDel, Body: map[string]string{"prefix": p.String()}}
}

func init() {
	routes[PathBlocklist] = route{method: http.MethodGet, name: "blocklist", serve: func(ctx context.Context, a Agent, _ map[string]string, _ []byte) (any, error) {
		b, err := blocker(a, "blocklist")
		if err != nil {
			return nil, err
		}
		return b.BlockList(ctx)
	}}
	routes[PathBlocklistAdd] = route{method: http.MethodPost, name: "blocklist add", body: true, serve: serveBlockAdd}
	routes[PathBlocklistDel] = route{method: http.MethodPost, name: "blocklist del", body: true, serve: serveBlockDel}
	paths = append(paths, PathBlocklist, PathBlocklistAdd, PathBlocklistDel)
}

func blocker(a Agent, name string) (Blocker, error) {
	b, ok := a.(Blocker)
	if !ok {
		return nil, &Error{Status: http.StatusBadRequest, Message: name + ": the XDP fast path is off (agent.xdp.interfaces is empty)"}
	}
	return b, nil
}

// readFields decodes a JSON object body of string fields, refusing
// fields other than allowed.
func readFields(name string, body []byte, allowed ...string) (map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, badParam("body", clip(string(body)), fmt.Sprintf(`%s: body %q: want a JSON object such as {"prefix": "198.18.0.0/24"}`, name, clip(string(body))))
	}
	out := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if !slices.Contains(allowed, k) {
			return nil, badParam(k, clip(string(raw[k])), fmt.Sprintf("%s: unknown field %q (want %v)", name, k, allowed))
		}
		var s string
		if err := json.Unmarshal(raw[k], &s); err != nil {
			return nil, badParam(k, clip(string(raw[k])), fmt.Sprintf("%s: %s %s: want a string", name, k, clip(string(raw[k]))))
		}
		out[k] = s
	}
	return out, nil
}

func readPrefix(name string, f map[string]string) (netip.Prefix, error) {
	s, ok := f["prefix"]
	if !ok {
		return netip.Prefix{}, badParam("prefix", "", fmt.Sprintf(`%s: prefix missing (want {"prefix": "198.18.0.0/24"})`, name))
	}
	p, err := xdp.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, badParam("prefix", clip(s), fmt.Sprintf("%s: prefix %v", name, err))
	}
	return p, nil
}

func serveBlockAdd(ctx context.Context, a Agent, _ map[string]string, body []byte) (any, error) {
	const name = "blocklist add"
	b, err := blocker(a, name)
	if err != nil {
		return nil, err
	}
	f, err := readFields(name, body, "prefix", "for", "reason")
	if err != nil {
		return nil, err
	}
	p, err := readPrefix(name, f)
	if err != nil {
		return nil, err
	}
	args := BlockAddArgs{Prefix: p, Reason: f["reason"]}
	if s, ok := f["for"]; ok {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return nil, badParam("for", clip(s), fmt.Sprintf(`%s: for %q: want a positive duration such as "10m" or "1h"`, name, clip(s)))
		}
		args.For = d
	}
	if len(args.Reason) > xdp.MaxReasonLen {
		return nil, badParam("reason", clip(args.Reason), fmt.Sprintf("%s: reason of %d bytes: at most %d", name, len(args.Reason), xdp.MaxReasonLen))
	}
	return b.BlockAdd(ctx, args)
}

func serveBlockDel(ctx context.Context, a Agent, _ map[string]string, body []byte) (any, error) {
	const name = "blocklist del"
	b, err := blocker(a, name)
	if err != nil {
		return nil, err
	}
	f, err := readFields(name, body, "prefix")
	if err != nil {
		return nil, err
	}
	p, err := readPrefix(name, f)
	if err != nil {
		return nil, err
	}
	return b.BlockDel(ctx, p)
}

// BlockList lists the live blocklist.
func (c *Client) BlockList(ctx context.Context) (Blocklist, error) {
	return do[Blocklist](ctx, c, BlockListCall())
}

// XDPStatus is the XDP fast path in GET /v1/status; absent when
// agent.xdp.interfaces is empty.
type XDPStatus struct {
	Rules      int                  `json:"rules"`
	Blocklist  int                  `json:"blocklist_entries"`
	Blackholes int                  `json:"blackholes"`
	Interfaces []XDPInterfaceStatus `json:"interfaces"`
	// Failed lists selected interfaces the program could not be
	// attached to, with why (another XDP program holds it, ...).
	Failed []XDPFailure `json:"failed,omitempty"`
}

// XDPInterfaceStatus is one interface the XDP program is attached to.
type XDPInterfaceStatus struct {
	Name  string `json:"name"`
	Index int    `json:"index"`
	Mode  string `json:"mode"` // native or generic
	// Attached is false when the program was detached behind the
	// agent's back.
	Attached bool          `json:"attached"`
	Hits     []XDPRuleHits `json:"hits,omitempty"`
}

// XDPRuleHits is what one rule (or the blocklist or blackhole list) did
// on one interface.
type XDPRuleHits struct {
	Rule    string `json:"rule"`
	Action  string `json:"action"` // pass or drop
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// XDPFailure is an interface XDP could not be attached to.
type XDPFailure struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}
