// SPDX-License-Identifier: AGPL-3.0-only

package main

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/control"
)

// flowsAgent answers Flows with one flow; the rest is unused here.
type flowsAgent struct{ control.Agent }

func (flowsAgent) Flows(context.Context, control.FlowsArgs) (control.Flows, error) {
	return control.Flows{SampleRate: 1, Active: 1, Flows: []control.Flow{{Iface: "eth0", Direction: "egress", Proto: 17,
		Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"), SrcPort: 1, DstPort: 2, Packets: 1, Bytes: 64}}}, nil
}

func serveFlows(t *testing.T, path string) *control.Server {
	t.Helper()
	s, err := control.Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(context.Background(), flowsAgent{})
	t.Cleanup(s.Close)
	return s
}

// frameWriter calls onFrame after each write (watchFlows writes one
// frame per call).
type frameWriter struct {
	frames  []string
	onFrame func(n int)
}

func (w *frameWriter) Write(p []byte) (int, error) {
	w.frames = append(w.frames, string(p))
	w.onFrame(len(w.frames))
	return len(p), nil
}

// TestWatchRedials: a watch survives the agent closing its connection
// (idle timeout, agent restart) by dialing again, and stops cleanly when
// its context ends.
func TestWatchRedials(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rfm.sock")
	first := serveFlows(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := &frameWriter{onFrame: func(n int) {
		switch n {
		case 1: // the agent restarts between two frames
			first.Close()
			serveFlows(t, path)
		case 3:
			cancel()
		}
	}}
	err := watchFlows(ctx, w, controlFlags{socket: path}, control.FlowsArgs{Top: 20}, 10*time.Millisecond)
	if err != nil {
		t.Fatalf("watchFlows: %v", err)
	}
	// Not a terminal: a blank line between tables, no escape sequences.
	want := "1 of 1 active flows by bytes"
	if len(w.frames) < 3 || !strings.HasPrefix(w.frames[0], want) || !strings.HasPrefix(w.frames[2], "\n"+want) {
		t.Errorf("frames = %q", w.frames)
	}
	for _, f := range w.frames {
		if strings.Contains(f, "\x1b") {
			t.Errorf("escape sequence in a frame for a non-terminal: %q", f)
		}
	}
}

func TestWatchStopsOnAgentError(t *testing.T) {
	// No agent: the first dial fails with the usual one-line error.
	path := filepath.Join(t.TempDir(), "rfm.sock")
	err := watchFlows(context.Background(), &frameWriter{onFrame: func(int) {}}, controlFlags{socket: path}, control.FlowsArgs{}, time.Millisecond)
	if err == nil || !strings.HasPrefix(err.Error(), "no agent running? ") {
		t.Errorf("watchFlows without agent: %v", err)
	}
}
