// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// A fixed source port (agent.ipfix.bind.port) must survive a reload: the
// replacement exporter opens its socket while the old one still flushes
// its queue, and collectors key templates by exporter address and port,
// so the port cannot change. Both sockets therefore set SO_REUSEPORT,
// which lets them share the port; the kernel only allows that between
// sockets of the same user that all set the option.

// dialUDP opens the exporter's connected UDP socket, with SO_REUSEPORT
// when reusePort is set.
func dialUDP(laddr, raddr *net.UDPAddr, reusePort bool) (*net.UDPConn, error) {
	if !reusePort {
		return net.DialUDP("udp", laddr, raddr)
	}
	d := net.Dialer{Control: setReusePort}
	if laddr != nil {
		d.LocalAddr = laddr
	}
	c, err := d.DialContext(context.Background(), "udp", raddr.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

func setReusePort(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("setting SO_REUSEPORT: %w", serr)
	}
	return nil
}

// CheckBindFree binds bind towards collector as New would, but without
// SO_REUSEPORT, and closes the socket again: it fails when any other
// socket holds the address, which a later New with ReusePort would not
// notice.
func CheckBindFree(bind, collector string) error {
	raddr, err := net.ResolveUDPAddr("udp", collector)
	if err != nil {
		return fmt.Errorf("collector %q: %w", collector, err)
	}
	laddr, err := net.ResolveUDPAddr("udp", bind)
	if err != nil {
		return err
	}
	c, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		return err
	}
	return c.Close()
}
