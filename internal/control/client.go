// SPDX-License-Identifier: AGPL-3.0-only

package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Client timeouts. Reload reopens MMDB files and may rebind ports, so a
// response may take a while; a dead agent must not hang the CLI.
const (
	dialTimeout     = 3 * time.Second
	responseTimeout = RequestTimeout + 10*time.Second
)

// Client is one connection to the agent's control socket. It sends one
// request at a time and is not safe for concurrent use.
type Client struct {
	path string
	conn net.Conn
	r    *bufio.Reader
}

// Dial connects to the control socket at path. Its errors are one line
// saying what to do: no agent, no permission, or a stale socket.
func Dial(path string) (*Client, error) {
	conn, err := net.DialTimeout("unix", path, dialTimeout)
	if err != nil {
		return nil, dialError(path, err)
	}
	return &Client{path: path, conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}, nil
}

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

// Path is the socket the client is connected to.
func (c *Client) Path() string { return c.path }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Do sends cmd with args (nil for none) and decodes the answer's Data
// into out (nil to discard; a *json.RawMessage keeps it as sent). An
// error answer from the agent is returned as an error with its message.
func (c *Client) Do(cmd string, args, out any) error {
	req := Request{V: Version, Cmd: cmd}
	if args != nil {
		raw, err := json.Marshal(args)
		if err != nil {
			return fmt.Errorf("%s: encoding args: %w", cmd, err)
		}
		req.Args = raw
	}
	line, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: encoding request: %w", cmd, err)
	}
	if len(line)+1 > MaxLineBytes {
		return fmt.Errorf("%s: request is %d bytes, the agent accepts at most %d", cmd, len(line)+1, MaxLineBytes)
	}
	c.conn.SetDeadline(time.Now().Add(responseTimeout))
	if _, err := c.conn.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("%s: sending to %s: %w", cmd, c.path, err)
	}
	answer, err := c.r.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("%s: no answer from the agent on %s: %w", cmd, c.path, err)
	}
	var resp Response
	if err := json.Unmarshal(answer, &resp); err != nil {
		return fmt.Errorf("%s: unreadable answer from the agent on %s: %w", cmd, c.path, err)
	}
	if !resp.OK {
		if resp.Error == "" {
			return fmt.Errorf("%s: the agent answered an error without a message", cmd)
		}
		return errors.New(resp.Error)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(resp.Data, out); err != nil {
		return fmt.Errorf("%s: decoding the answer (agent protocol version %d, this client %d): %w", cmd, resp.V, Version, err)
	}
	return nil
}

// Status asks for the agent's state.
func (c *Client) Status() (Status, error) {
	var s Status
	err := c.Do(CmdStatus, nil, &s)
	return s, err
}

// Flows asks for the live flow table.
func (c *Client) Flows(args FlowsArgs) (Flows, error) {
	var f Flows
	err := c.Do(CmdFlows, args, &f)
	return f, err
}

// RIBSummary asks for the routers, peers and route counts of the RIB.
func (c *Client) RIBSummary() (RIBSummary, error) {
	var r RIBSummary
	err := c.Do(CmdRIBSummary, nil, &r)
	return r, err
}

// RIBLookup asks for the routes of the longest prefix matching addr.
func (c *Client) RIBLookup(addr netip.Addr) (RIBLookup, error) {
	var r RIBLookup
	err := c.Do(CmdRIBLookup, RIBLookupArgs{Addr: addr.String()}, &r)
	return r, err
}

// SetSampleRate sets the 1-in-N sample rate of the running agent.
func (c *Client) SetSampleRate(rate uint32) (SampleRateChange, error) {
	var r SampleRateChange
	err := c.Do(CmdSetSampleRate, SetSampleRateArgs{Rate: rate}, &r)
	return r, err
}

// Reload makes the agent re-read its config file.
func (c *Client) Reload() (ReloadResult, error) {
	var r ReloadResult
	err := c.Do(CmdReload, nil, &r)
	return r, err
}
