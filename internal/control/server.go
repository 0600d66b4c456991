// SPDX-License-Identifier: AGPL-3.0-only

package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
)

// Limits of the server. They keep a misbehaving or stuck local client
// from holding memory or goroutines in the agent.
const (
	// MaxConns is how many connections are served at once; more are
	// answered with an error and closed.
	MaxConns = 16
	// MaxLineBytes is the longest request line accepted, newline included.
	MaxLineBytes = 64 << 10
	// IdleTimeout closes a connection that sends no request for this
	// long. `rfm flows --watch` redials when its interval is longer.
	IdleTimeout = 2 * time.Minute
	// RequestTimeout bounds one call into the Agent.
	RequestTimeout = 30 * time.Second
	// writeTimeout bounds writing one response to a client that stopped
	// reading.
	writeTimeout = 10 * time.Second
)

// Server is a listening control socket.
type Server struct {
	path string
	ln   *net.UnixListener
	log  *slog.Logger
	// dev and ino identify the socket file this server created, so Close
	// never removes a socket another agent put at the same path later.
	dev, ino uint64

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	once   sync.Once
}

// Listen creates the control socket at path, mode 0600 (owned by the
// calling user), creating its directory (0755) if missing. A socket file
// left by an agent that is gone is replaced; a socket some running agent
// answers on, or a path that is not a socket, is refused.
//
// The socket is bound inside a fresh 0700 directory next to path and then
// linked into place, so it is never reachable by other users, whatever
// the process umask, and an existing file at path is never overwritten.
func Listen(path string, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if path == "" {
		return nil, errors.New("agent.control.socket: empty path")
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("agent.control.socket %s: creating directory: %w", path, err)
	}
	if err := clearStale(path, log); err != nil {
		return nil, err
	}

	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("agent.control.socket %s: path is %d bytes long, Unix sockets allow at most %d", path, len(path), maxSocketPath)
	}
	ln, err := bindPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("agent.control.socket %s: %w", path, err)
	}
	fail := func(err error) (*Server, error) {
		ln.Close()
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		os.Remove(path)
		return fail(fmt.Errorf("agent.control.socket %s: %w", path, err))
	}
	return &Server{path: path, ln: ln, log: log, dev: st.Dev, ino: st.Ino, conns: map[net.Conn]struct{}{}}, nil
}

// maxSocketPath is the longest path sockaddr_un holds (108 bytes with
// the terminating NUL).
const maxSocketPath = 107

// bindPrivate binds a listener reachable at path with mode 0600. The
// socket is bound in a fresh 0700 directory next to path, chmod-ed, then
// hard-linked into place: it is never reachable by other users, whatever
// the umask, and link(2) fails with EEXIST rather than replacing a file
// created at path in the meantime. When the temporary name would be too
// long for sockaddr_un, it binds at path directly and chmods at once; the
// file then has the umask's mode for that instant (connecting needs write
// permission, which the usual umask 022 denies to others anyway).
func bindPrivate(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	tmpDir, err := os.MkdirTemp(dir, ".rfm-ctl-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	if len(tmp) > maxSocketPath {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			return nil, err
		}
		ln.SetUnlinkOnClose(false)
		if err := os.Chmod(path, 0o600); err != nil {
			ln.Close()
			os.Remove(path)
			return nil, err
		}
		return ln, nil
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// The bound name is the temporary one; Server.Close removes path.
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Link(tmp, path); err != nil {
		ln.Close()
		if errors.Is(err, os.ErrExist) {
			return nil, errors.New("in use by another running agent")
		}
		return nil, err
	}
	return ln, nil
}

// clearStale removes a socket file at path that nothing answers on.
func clearStale(path string, log *slog.Logger) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("agent.control.socket %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("agent.control.socket %s: exists and is not a socket (%s); not removing it", path, fi.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("agent.control.socket %s: in use by another running agent", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("agent.control.socket %s: checking the existing socket: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("agent.control.socket %s: removing stale socket: %w", path, err)
	}
	log.Info("removed stale control socket", "path", path)
	return nil
}

// Path is where the socket is.
func (s *Server) Path() string { return s.path }

// Serve answers connections with a until ctx ends or Close is called,
// then closes every open connection and waits for them. It returns nil
// after an orderly stop.
func (s *Server) Serve(ctx context.Context, a Agent) error {
	stop := context.AfterFunc(ctx, s.shutdown)
	defer stop()
	sem := make(chan struct{}, MaxConns)
	var tempDelay time.Duration
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if s.isClosed() {
				s.shutdown() // waits for a shutdown in progress to finish
				s.wg.Wait()
				return nil
			}
			// Out of file descriptors and the like: back off, keep serving.
			if tempDelay == 0 {
				tempDelay = 5 * time.Millisecond
			} else if tempDelay < time.Second {
				tempDelay *= 2
			}
			s.log.Warn("control socket accept", "err", err)
			select {
			case <-time.After(tempDelay):
			case <-ctx.Done():
			}
			continue
		}
		tempDelay = 0
		select {
		case sem <- struct{}{}:
		default:
			s.refuse(conn, fmt.Sprintf("busy: %d control connections already open", MaxConns))
			continue
		}
		if !s.track(conn) {
			conn.Close()
			<-sem
			continue
		}
		s.wg.Add(1)
		go func() {
			defer func() { s.untrack(conn); <-sem; s.wg.Done() }()
			s.serveConn(ctx, conn, a)
		}()
	}
}

// Close stops Serve, closes every connection and removes the socket
// file if it is still the one this server created.
func (s *Server) Close() {
	s.shutdown()
	s.wg.Wait()
}

func (s *Server) shutdown() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.ln.Close()
		var st syscall.Stat_t
		if err := syscall.Lstat(s.path, &st); err == nil && st.Dev == s.dev && st.Ino == s.ino {
			if err := os.Remove(s.path); err != nil {
				s.log.Warn("removing control socket", "path", s.path, "err", err)
			}
		}
	})
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// refuse answers one error and closes, for connections over the limit.
func (s *Server) refuse(c net.Conn, msg string) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	writeResponse(c, errorResponse(msg))
	c.Close()
}

// serveConn answers request lines in order until the client closes, goes
// idle, sends something unreadable, or the server stops.
func (s *Server) serveConn(ctx context.Context, c net.Conn, a Agent) {
	r := bufio.NewReaderSize(c, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(IdleTimeout))
		line, err := readLine(r, MaxLineBytes)
		if errors.Is(err, errLineTooLong) {
			s.reply(c, errorResponse(fmt.Sprintf("request line longer than %d bytes", MaxLineBytes)))
			return
		}
		if err != nil {
			// EOF, idle timeout or a closed connection: nothing to answer.
			if !errors.Is(err, io.EOF) && !s.isClosed() {
				s.log.Debug("control connection ended", "err", err)
			}
			return
		}
		resp, keep := s.handle(ctx, line, a)
		if !s.reply(c, resp) || !keep {
			return
		}
	}
}

// reply writes resp, reporting whether the connection is still usable.
func (s *Server) reply(c net.Conn, resp Response) bool {
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := writeResponse(c, resp); err != nil {
		s.log.Debug("control response not written", "err", err)
		return false
	}
	return true
}

var errLineTooLong = errors.New("line too long")

// readLine reads one '\n'-terminated line of at most limit bytes
// (newline included) and returns it without the newline. A final line
// without newline at EOF is returned as a line.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > limit {
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, nil
		default:
			return nil, err
		}
	}
}

// handle answers one request line. keep is false when the connection
// should close after the answer (the line was not a request at all).
func (s *Server) handle(ctx context.Context, line []byte, a Agent) (resp Response, keep bool) {
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		return errorResponse(fmt.Sprintf("malformed request: %v", err)), false
	}
	if req.V != Version {
		return errorResponse(fmt.Sprintf("protocol version %d not supported: this agent speaks version %d (use the rfm binary matching the agent)", req.V, Version)), true
	}
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	start := time.Now()
	data, err := s.dispatch(ctx, req, a)
	s.log.Debug("control request", "cmd", req.Cmd, "took", time.Since(start), "err", err)
	if err != nil {
		return errorResponse(err.Error()), true
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return errorResponse(fmt.Sprintf("%s: encoding the answer: %v", req.Cmd, err)), true
	}
	return Response{V: Version, OK: true, Data: raw}, true
}

// dispatch calls the Agent method for req. A panic in the Agent becomes
// an error answer rather than taking the agent down.
func (s *Server) dispatch(ctx context.Context, req Request, a Agent) (data any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("control request panicked", "cmd", req.Cmd, "panic", p, "stack", string(debug.Stack()))
			data, err = nil, fmt.Errorf("%s: internal error in the agent (logged)", req.Cmd)
		}
	}()
	switch req.Cmd {
	case CmdStatus:
		return a.Status(ctx)
	case CmdFlows:
		var args FlowsArgs
		if err := decodeArgs(req, &args); err != nil {
			return nil, err
		}
		if args.Top < 0 {
			return nil, fmt.Errorf("flows: top %d: must be >= 0", args.Top)
		}
		if args.Sort != "" && args.Sort != "bytes" && args.Sort != "packets" {
			return nil, fmt.Errorf("flows: sort %q: want bytes or packets", args.Sort)
		}
		return a.Flows(ctx, args)
	case CmdRIBSummary:
		return a.RIBSummary(ctx)
	case CmdRIBLookup:
		var args RIBLookupArgs
		if err := decodeArgs(req, &args); err != nil {
			return nil, err
		}
		addr, err := netip.ParseAddr(args.Addr)
		if err != nil {
			return nil, fmt.Errorf("rib lookup: address %q: not an IPv4 or IPv6 address", args.Addr)
		}
		return a.RIBLookup(ctx, addr)
	case CmdSetSampleRate:
		var args SetSampleRateArgs
		if err := decodeArgs(req, &args); err != nil {
			return nil, err
		}
		if args.Rate < 1 {
			return nil, fmt.Errorf("sample rate %d: must be >= 1", args.Rate)
		}
		return a.SetSampleRate(ctx, args.Rate)
	case CmdReload:
		return a.Reload(ctx)
	}
	return nil, fmt.Errorf("unknown command %q", req.Cmd)
}

// decodeArgs reads req.Args into v; absent args leave v zero. Unknown
// fields are ignored: newer clients may send optional additions.
func decodeArgs(req Request, v any) error {
	if len(req.Args) == 0 || string(req.Args) == "null" {
		return nil
	}
	if err := json.Unmarshal(req.Args, v); err != nil {
		return fmt.Errorf("%s: bad args: %v", req.Cmd, err)
	}
	return nil
}

func errorResponse(msg string) Response {
	return Response{V: Version, OK: false, Error: msg}
}

// writeResponse writes resp as one line.
func writeResponse(w io.Writer, resp Response) error {
	b, err := json.Marshal(resp)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
