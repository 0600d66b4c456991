// SPDX-License-Identifier: AGPL-3.0-only

package control

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"testing"
	"time"
)

// FuzzServeRequest sends arbitrary bytes as request lines to a server
// backed by the fake agent. Every answer must be one valid Response line;
// the server may close early only after an error answer (malformed or
// oversize line), never panic or hang.
func FuzzServeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"v":1,"cmd":"status"}` + "\n",
		`{"v":1,"cmd":"flows","args":{"top":3,"sort":"packets","iface":"eth0"}}` + "\n",
		`{"v":1,"cmd":"rib.lookup","args":{"addr":"2001:db8::1"}}` + "\n",
		`{"v":1,"cmd":"set.sample_rate","args":{"rate":0}}` + "\n",
		`{"v":2,"cmd":"reload"}` + "\n" + `{"v":1,"cmd":"nope"}`,
		"not json\n",
		"\n\n",
	} {
		f.Add([]byte(seed))
	}
	_, path := startServer(f, &fakeAgent{rate: 100})
	f.Fuzz(func(t *testing.T, in []byte) {
		conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		// Write from a goroutine: the server may stop reading early.
		go func() {
			conn.Write(in)
			conn.CloseWrite()
		}()
		lines := bytes.Count(in, []byte("\n"))
		if len(in) > 0 && in[len(in)-1] != '\n' {
			lines++
		}
		r := bufio.NewReader(conn)
		var answers []Response
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				if len(line) > 0 {
					t.Fatalf("partial answer %q", line)
				}
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("no answer or close within 10s after %d answers", len(answers))
				}
				break
			}
			var resp Response
			if err := json.Unmarshal(line, &resp); err != nil {
				t.Fatalf("answer %q is not a Response: %v", line, err)
			}
			if resp.V != Version || resp.OK == (resp.Error != "") || (resp.OK && len(resp.Data) == 0) {
				t.Fatalf("inconsistent answer %q", line)
			}
			answers = append(answers, resp)
		}
		if len(answers) > lines {
			t.Fatalf("%d answers to %d lines", len(answers), lines)
		}
		if len(answers) < lines && (len(answers) == 0 || answers[len(answers)-1].OK) {
			// Closed early: only after an error answer, unless the
			// connection ended because an oversize line was cut.
			if len(in) <= MaxLineBytes {
				t.Fatalf("%d answers to %d lines, last not an error", len(answers), lines)
			}
		}
	})
}
