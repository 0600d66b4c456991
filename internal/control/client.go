// SPDX-License-Identifier: AGPL-3.0-only

package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Client timeouts. Reload reopens MMDB files and may rebind ports, so an
// answer may take a while; a dead agent must not hang the CLI.
const (
	dialTimeout     = 3 * time.Second
	responseTimeout = RequestTimeout + 10*time.Second
	// clientIdleTimeout is shorter than the server's IdleTimeout, so the
	// client drops a kept-alive connection before the agent does.
	clientIdleTimeout = IdleTimeout - 30*time.Second
)

// Client calls the agent's control API on its Unix socket, keeping a
// connection open between calls. It is safe for concurrent use.
type Client struct {
	path string
	tr   *http.Transport
	hc   *http.Client
}

// NewClient returns a client of the control socket at path. It connects
// at the first call; a failure to connect is one line saying what to
// do: no agent, no permission, or a stale socket.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			c, err := d.DialContext(ctx, "unix", path)
			if err != nil {
				return nil, &dialFailure{dialError(path, err)}
			}
			return c, nil
		},
		Proxy:                 nil, // never an HTTP proxy from the environment
		DisableCompression:    true,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       clientIdleTimeout,
		ResponseHeaderTimeout: responseTimeout,
	}
	return &Client{path: path, tr: tr, hc: &http.Client{Transport: tr, Timeout: responseTimeout}}
}

// dialFailure carries the one-line connect error through net/http.
type dialFailure struct{ err error }

func (d *dialFailure) Error() string { return d.err.Error() }
func (d *dialFailure) Unwrap() error { return d.err }

func dialError(path string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("no agent running? %s: no such file (start `rfm agent` or pass --socket)", path)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%s: permission denied (the control socket is 0600, owned by the agent's user; run as that user or root)", path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s: connection refused: stale socket or not a socket, no agent is listening (start `rfm agent`)", path)
	case errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%s: a parent is not a directory (pass --socket with the agent's agent.control.socket)", path)
	}
	return fmt.Errorf("control socket %s: %w", path, err)
}

// Path is the socket the client calls.
func (c *Client) Path() string { return c.path }

// Close closes the kept-alive connection.
func (c *Client) Close() error {
	c.tr.CloseIdleConnections()
	return nil
}

// Do makes call and decodes the answer into out (nil to discard; a
// *json.RawMessage keeps it as sent). An error answer from the agent is
// returned as an *Error whose message is the agent's.
func (c *Client) Do(ctx context.Context, call Call, out any) error {
	u := url.URL{Scheme: "http", Host: "rfm", Path: call.Path}
	if len(call.Query) > 0 {
		u.RawQuery = call.Query.Encode()
	}
	var body io.Reader
	if call.Body != nil {
		b, err := json.Marshal(call.Body)
		if err != nil {
			return fmt.Errorf("%s: encoding the body: %w", call, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, call.Method, u.String(), body)
	if err != nil {
		return fmt.Errorf("%s: %w", call, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "rfm")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var df *dialFailure
		if errors.As(err, &df) {
			return df.err
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if strings.Contains(err.Error(), "malformed HTTP ") {
			// An agent from before the HTTP API answers in JSON lines.
			return fmt.Errorf("%s: the agent on %s does not answer in HTTP: an older agent? (use the rfm binary matching it)", call, c.path)
		}
		return fmt.Errorf("%s: no answer from the agent on %s: %w", call, c.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s: reading the answer from the agent on %s: %w", call, c.path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e Error
		if json.Unmarshal(data, &e) == nil && e.Message != "" {
			e.Status = resp.StatusCode
			return &e
		}
		// Not one of ours: net/http's own answers (431, malformed
		// requests) are plain text.
		line, _, _ := bytes.Cut(bytes.TrimSpace(data), []byte("\n"))
		return &Error{Status: resp.StatusCode, Message: fmt.Sprintf("%s: %s from the agent on %s: %s", call, resp.Status, c.path, clip(string(line)))}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: decoding the answer from the agent on %s: %w", call, c.path, err)
	}
	return nil
}

func do[T any](ctx context.Context, c *Client, call Call) (T, error) {
	var v T
	err := c.Do(ctx, call, &v)
	return v, err
}

// Status asks for the agent's state.
func (c *Client) Status(ctx context.Context) (Status, error) {
	return do[Status](ctx, c, StatusCall())
}

// Flows asks for the live flow table.
func (c *Client) Flows(ctx context.Context, args FlowsArgs) (Flows, error) {
	return do[Flows](ctx, c, FlowsCall(args))
}

// RIBSummary asks for the routers, peers and route counts of the RIB.
func (c *Client) RIBSummary(ctx context.Context) (RIBSummary, error) {
	return do[RIBSummary](ctx, c, RIBSummaryCall())
}

// RIBLookup asks for the routes of the longest prefix matching addr.
func (c *Client) RIBLookup(ctx context.Context, addr netip.Addr) (RIBLookup, error) {
	return do[RIBLookup](ctx, c, RIBLookupCall(addr))
}

// SetSampleRate sets the 1-in-N sample rate of the running agent.
func (c *Client) SetSampleRate(ctx context.Context, rate uint32) (SampleRateChange, error) {
	return do[SampleRateChange](ctx, c, SetSampleRateCall(rate))
}

// Reload makes the agent re-read its config file.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	return do[ReloadResult](ctx, c, ReloadCall())
}
