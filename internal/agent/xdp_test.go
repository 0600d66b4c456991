// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/datapath/xdp"
	"github.com/stepbrobd/rfm/internal/ifwatch"
	"github.com/stepbrobd/rfm/test/lab"
)

// xdpLab is a namespace with veths and the XDP path started in it on
// the first, as the agent starts it (no watcher: tests call the hotplug
// callbacks themselves).
type xdpLab struct {
	ns    string
	x     *xdpPath
	dir   string
	first ifwatch.Link // the veth present at start, "xq0"
}

func newXDPLab(t *testing.T, c config.XDP) *xdpLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	l := &xdpLab{ns: fmt.Sprintf("rfmax%d%d", os.Getpid()%10000, time.Now().UnixNano()%1000), dir: t.TempDir()}
	lab.Run(t, "ip", "netns", "add", l.ns)
	t.Cleanup(func() { exec(t, "ip", "netns", "del", l.ns) })
	l.first = l.veth(t, "xq0")
	if c.StateFile == "" {
		c.StateFile = filepath.Join(l.dir, "blocklist.json")
	}
	var dp *datapath.Datapath
	l.in(t, func() error {
		var err error
		if dp, err = datapath.Load(datapath.Options{RingBufSize: 1 << 16, MaxInterfaces: 4}); err != nil {
			return err
		}
		if l.x, err = startXDP(c, dp, nil, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
			return err
		}
		ifaces, err := net.Interfaces()
		if err != nil {
			return err
		}
		return l.x.attachAll(ifaces)
	})
	t.Cleanup(func() {
		l.in(t, func() error { return errors.Join(l.x.close(), dp.Close()) })
	})
	return l
}

func exec(t *testing.T, argv ...string) {
	t.Helper()
	lab.Run(t, argv[0], argv[1:]...)
}

// veth adds a veth pair, both ends in the namespace, up; returns the
// first end.
func (l *xdpLab) veth(t *testing.T, name string) ifwatch.Link {
	t.Helper()
	exec(t, "ip", "-n", l.ns, "link", "add", name, "type", "veth", "peer", "name", name+"p")
	exec(t, "ip", "-n", l.ns, "link", "set", name, "up")
	exec(t, "ip", "-n", l.ns, "link", "set", name+"p", "up")
	var link ifwatch.Link
	l.in(t, func() error {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		link = ifwatch.Link{Index: ifc.Index, Name: ifc.Name}
		return nil
	})
	return link
}

func (l *xdpLab) in(t *testing.T, fn func() error) {
	t.Helper()
	if err := lab.InNetns(l.ns, fn); err != nil {
		t.Fatal(err)
	}
}

func (l *xdpLab) modeOf(t *testing.T, ifindex int) string {
	t.Helper()
	for _, a := range l.x.prog.Attached() {
		if a.Index == ifindex {
			return a.Mode.String()
		}
	}
	return "not attached"
}

// TestXDPHotplugDuringModeReload: an interface hotplugged between a
// mode reload's prepare and its commit ends up in the new mode. The
// hotplug attach is started after the prepare and the commit made once
// it either finished or waits for the reload, so without the lock it
// would deterministically attach in the old mode.
func TestXDPHotplugDuringModeReload(t *testing.T) {
	cur := &config.Config{}
	cur.Agent.XDP = config.XDP{Interfaces: []string{"xq*"}, Mode: "native"}
	l := newXDPLab(t, cur.Agent.XDP)
	cur.Agent.XDP.StateFile = filepath.Join(l.dir, "blocklist.json")
	next := *cur
	next.Agent.XDP.Mode = "generic"

	var rc reconfig
	l.in(t, func() error {
		var err error
		rc, err = l.x.reconfigure(cur, &next)
		return err
	})
	if rc.commit == nil {
		t.Fatal("mode change prepared nothing to commit")
	}
	hot := l.veth(t, "xq1")
	done := make(chan error, 1)
	go func() { done <- lab.InNetns(l.ns, func() error { return l.x.hotplugAttach(hot) }) }()
	var attachErr error
	finished := false
	lab.Eventually(t, 10*time.Second, "the hotplug attach finished or waits for the reload", func() error {
		select {
		case attachErr = <-done:
			finished = true
			return nil
		default:
		}
		if l.x.hotplugWaits.Load() > 0 {
			return nil
		}
		return errors.New("neither")
	})
	l.in(t, func() error { rc.commit(); return nil })
	if !finished {
		attachErr = <-done
	}
	if attachErr != nil {
		t.Fatal(attachErr)
	}
	if got := l.modeOf(t, hot.Index); got != xdp.ModeGeneric.String() {
		t.Errorf("hotplugged %s during the reload: mode %s, want generic", hot.Name, got)
	}
	if got := l.modeOf(t, l.first.Index); got != xdp.ModeGeneric.String() {
		t.Errorf("%s, attached before the reload: mode %s, want generic", l.first.Name, got)
	}
}
