// SPDX-License-Identifier: AGPL-3.0-only

package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// checkingAgent is the fake agent, checking that the handler only ever
// passes it valid arguments; violation records the first bad one.
type checkingAgent struct {
	fakeAgent
	violation string
}

func (c *checkingAgent) Flows(ctx context.Context, args FlowsArgs) (Flows, error) {
	if args.Top < 0 || (args.Sort != "" && args.Sort != "bytes" && args.Sort != "packets") {
		c.violation = fmt.Sprintf("Flows(%+v)", args)
	}
	return c.fakeAgent.Flows(ctx, args)
}

func (c *checkingAgent) RIBLookup(ctx context.Context, addr netip.Addr) (RIBLookup, error) {
	if !addr.IsValid() || addr.Zone() != "" {
		c.violation = fmt.Sprintf("RIBLookup(%v)", addr)
	}
	return c.fakeAgent.RIBLookup(ctx, addr)
}

func (c *checkingAgent) SetSampleRate(ctx context.Context, rate uint32) (SampleRateChange, error) {
	if rate < 1 {
		c.violation = fmt.Sprintf("SetSampleRate(%d)", rate)
	}
	// The fake records every rate; keep its memory flat over a long run.
	c.fakeAgent.rates = c.fakeAgent.rates[:0]
	return c.fakeAgent.SetSampleRate(ctx, rate)
}

// answerTypes are the 200 bodies of each path.
var answerTypes = map[string]func() any{
	PathStatus:     func() any { return new(Status) },
	PathFlows:      func() any { return new(Flows) },
	PathRIBSummary: func() any { return new(RIBSummary) },
	PathRIBLookup:  func() any { return new(RIBLookup) },
	PathSampleRate: func() any { return new(SampleRateChange) },
	PathReload:     func() any { return new(ReloadResult) },
}

// FuzzServeRequest sends arbitrary requests (method, request target and
// body, as net/http parses them off the wire) to the API handler backed
// by the fake agent. Every answer must be one line of JSON with a status
// the API documents: 200 with the path's answer type, or an error body
// whose message is one line, naming parameter and value for 400 and the
// allowed method for 405. The agent must never see invalid arguments.
func FuzzServeRequest(f *testing.F) {
	f.Add("GET", "/v1/status", []byte(nil))
	f.Add("GET", "/v1/flows?top=3&sort=packets&iface=eth0", []byte(nil))
	f.Add("GET", "/v1/rib/lookup?addr=2001:db8::1", []byte(nil))
	f.Add("PUT", "/v1/sample-rate", []byte(`{"rate":0}`))
	f.Add("POST", "/v1/reload", []byte("x"))
	f.Add("GET", "/v2/status", []byte(nil))
	f.Add("DELETE", "/v1/flows?top=1&top=2", []byte(nil))
	f.Fuzz(func(t *testing.T, method, target string, body []byte) {
		raw := method + " " + target + " HTTP/1.1\r\nHost: rfm\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + string(body)
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // net/http answers 400 itself before any handler
		}
		agent := &checkingAgent{fakeAgent: fakeAgent{rate: 100}}
		rec := httptest.NewRecorder()
		newHandler(agent, nil, time.Second).ServeHTTP(rec, req)
		if agent.violation != "" {
			t.Fatalf("%s %q: the agent got %s", method, target, agent.violation)
		}

		resp := rec.Result()
		out := rec.Body.Bytes()
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %q: Content-Type %q", method, target, ct)
		}
		if bytes.Count(out, []byte("\n")) != 1 || out[len(out)-1] != '\n' || !json.Valid(out) {
			t.Fatalf("%s %q: body is not one line of JSON: %q", method, target, out)
		}
		rt, known := routes[req.URL.Path]
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.DisallowUnknownFields()
		switch resp.StatusCode {
		case http.StatusOK:
			if !known || req.Method != rt.method {
				t.Fatalf("%s %q: 200 for a path or method the API lacks", method, target)
			}
			answer := answerTypes[req.URL.Path]()
			if err := dec.Decode(answer); err != nil {
				t.Fatalf("%s %q: answer %q is not a %T: %v", method, target, out, answer, err)
			}
			if req.URL.Path == PathSampleRate {
				// The rate set is the one the body asked for.
				var asked struct{ Rate uint32 }
				if err := json.Unmarshal(body, &asked); err != nil || asked.Rate != answer.(*SampleRateChange).Rate {
					t.Fatalf("body %q answered %q", body, out)
				}
			}
			return
		case http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge, http.StatusInternalServerError:
		default:
			t.Fatalf("%s %q: status %d", method, target, resp.StatusCode)
		}
		var e errorBody
		if err := dec.Decode(&e); err != nil || e.Error == "" || strings.ContainsAny(e.Error, "\r\n") {
			t.Fatalf("%s %q: error answer %q (%v)", method, target, out, err)
		}
		switch resp.StatusCode {
		case http.StatusBadRequest:
			if e.Parameter == "" || e.Value == nil {
				t.Fatalf("%s %q: 400 without parameter and value: %q", method, target, out)
			}
		case http.StatusNotFound:
			if known {
				t.Fatalf("%s %q: 404 for a path the API has", method, target)
			}
		case http.StatusMethodNotAllowed:
			if !known || req.Method == rt.method || resp.Header.Get("Allow") != rt.method {
				t.Fatalf("%s %q: 405 with Allow %q", method, target, resp.Header.Get("Allow"))
			}
		case http.StatusRequestEntityTooLarge:
			if len(body) <= MaxBodyBytes {
				t.Fatalf("%s %q: 413 for a %d-byte body", method, target, len(body))
			}
		case http.StatusInternalServerError:
			// Only the fake's panic address.
			if req.URL.Path != PathRIBLookup {
				t.Fatalf("%s %q: 500: %q", method, target, out)
			}
		}
	})
}
