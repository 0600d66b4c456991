// SPDX-License-Identifier: AGPL-3.0-only

package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Limits of the server. They keep a misbehaving or stuck local client
// from holding memory or goroutines in the agent.
const (
	// MaxConns is how many connections are served at once. A connection
	// over the limit is answered 503 and closed.
	MaxConns = 16
	// MaxHeaderBytes bounds the request line and headers (net/http reads
	// up to 4 KiB beyond it before answering 431).
	MaxHeaderBytes = 16 << 10
	// MaxBodyBytes bounds a request body; a longer one is answered 413.
	MaxBodyBytes = 4 << 10
	// ReadHeaderTimeout and ReadTimeout bound reading a request's header
	// and the whole request.
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 20 * time.Second
	// RequestTimeout bounds one call into the Agent; past it the answer
	// is 503.
	RequestTimeout = 30 * time.Second
	// WriteTimeout bounds the time from the end of reading a request's
	// header to the end of writing its answer.
	WriteTimeout = RequestTimeout + 10*time.Second
	// IdleTimeout closes a kept-alive connection that sends no request
	// for this long.
	IdleTimeout = 2 * time.Minute
	// maxRefusing is how many connections over MaxConns are answered 503
	// at once; beyond that they are closed unanswered.
	maxRefusing = 4
	// refuseTimeout bounds reading the request and writing the 503 of a
	// refused connection.
	refuseTimeout = time.Second
)

// timeouts are a server's; tests shorten them.
type timeouts struct {
	readHeader, read, write, idle, request time.Duration
}

var defaultTimeouts = timeouts{
	readHeader: ReadHeaderTimeout, read: ReadTimeout, write: WriteTimeout, idle: IdleTimeout, request: RequestTimeout,
}

// Server is a listening control socket.
type Server struct {
	path     string
	ln       *net.UnixListener
	log      *slog.Logger
	timeouts timeouts
	// dev and ino identify the socket file this server created, so Close
	// never removes a socket another agent put at the same path later.
	dev, ino uint64

	mu       sync.Mutex
	closed   bool
	srv      *http.Server       // set by Serve
	cancel   context.CancelFunc // ends the requests' contexts
	inflight int                // handlers running
	idle     *sync.Cond         // signalled when inflight drops to 0
	once     sync.Once
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
	srv := &Server{path: path, ln: ln, log: log, timeouts: defaultTimeouts, dev: st.Dev, ino: st.Ino}
	srv.idle = sync.NewCond(&srv.mu)
	return srv, nil
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
		return listenOwnerOnly(path)
	}
	// The bound name is the temporary one; Server.Close removes path.
	ln, err := listenOwnerOnly(tmp)
	if err != nil {
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

// listenOwnerOnly binds a socket at name and makes it mode 0600. The
// file stays when the listener closes: Server.Close removes it.
func listenOwnerOnly(name string) (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(name, 0o600); err != nil {
		ln.Close()
		os.Remove(name)
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

// Serve answers HTTP requests with a until ctx ends or Close is called,
// then closes every connection and waits for the requests in progress
// (whose contexts are cancelled). It returns nil after an orderly stop.
func (s *Server) Serve(ctx context.Context, a Agent) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &http.Server{
		Handler:           s.track(newHandler(a, s.log, s.timeouts.request)),
		ReadHeaderTimeout: s.timeouts.readHeader,
		ReadTimeout:       s.timeouts.read,
		WriteTimeout:      s.timeouts.write,
		IdleTimeout:       s.timeouts.idle,
		MaxHeaderBytes:    MaxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.srv, s.cancel = srv, cancel
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, s.shutdown)
	defer stop()
	err := srv.Serve(&limitListener{Listener: s.ln, serving: make(chan struct{}, MaxConns), refusing: make(chan struct{}, maxRefusing), log: s.log})
	closed := s.isClosed()
	s.shutdown() // waits for a shutdown in progress to finish
	s.waitIdle()
	if closed {
		return nil
	}
	return fmt.Errorf("agent.control.socket %s: %w", s.path, err)
}

// Close stops Serve, closes every connection, waits for the requests in
// progress and removes the socket file if it is still the one this
// server created.
func (s *Server) Close() {
	s.shutdown()
	s.waitIdle()
}

func (s *Server) shutdown() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		srv, cancel := s.srv, s.cancel
		s.mu.Unlock()
		if cancel != nil {
			cancel()
		}
		if srv != nil {
			srv.Close()
		}
		s.ln.Close() // Serve may not have handed it to srv yet
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

// track counts the requests in progress, so Close can wait for them,
// and answers 503 to a request that arrives while the server stops.
func (s *Server) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			writeError(w, &Error{Status: http.StatusServiceUnavailable, Message: "the agent is shutting down"})
			return
		}
		s.inflight++
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			if s.inflight--; s.inflight == 0 {
				s.idle.Broadcast()
			}
			s.mu.Unlock()
		}()
		h.ServeHTTP(w, r)
	})
}

func (s *Server) waitIdle() {
	s.mu.Lock()
	for s.inflight > 0 {
		s.idle.Wait()
	}
	s.mu.Unlock()
}

// limitListener hands net/http at most cap(serving) connections at a
// time. One over the limit is answered 503 by a short-lived goroutine
// (at most cap(refusing) of them), or closed when those are busy too.
type limitListener struct {
	net.Listener
	serving, refusing chan struct{}
	log               *slog.Logger
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.serving <- struct{}{}:
			return &slotConn{Conn: c, release: func() { <-l.serving }}, nil
		default:
		}
		select {
		case l.refusing <- struct{}{}:
			go func() {
				defer func() { <-l.refusing }()
				refuse(c, l.log)
			}()
		default:
			c.Close()
		}
	}
}

// slotConn gives its slot back when net/http closes it.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// refuse answers a connection over MaxConns with 503 and closes it. It
// reads the request header first, so a client that writes its request
// after connecting does not find the connection reset.
func refuse(c net.Conn, log *slog.Logger) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(refuseTimeout))
	r := bufio.NewReaderSize(io.LimitReader(c, MaxHeaderBytes), 4096)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			break // EOF, timeout or oversize: answer anyway
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 && err == nil {
			break // end of the header
		}
	}
	body, _ := json.Marshal(Error{Message: fmt.Sprintf("busy: %d control connections already open", MaxConns)})
	body = append(body, '\n')
	resp := fmt.Sprintf("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	if _, err := io.WriteString(c, resp); err != nil {
		log.Debug("control connection refused unanswered", "err", err)
	}
}
