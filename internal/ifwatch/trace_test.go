package ifwatch

import (
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestTraceEvents(t *testing.T) {
	ns, h := testNetns(t)
	ch := make(chan netlink.LinkUpdate, 100)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{Namespace: &ns}); err != nil {
		t.Fatal(err)
	}
	dump := func(what string) {
		t.Logf("== %s", what)
		for {
			select {
			case u := <-ch:
				typ := "NEW"
				if u.Header.Type == unix.RTM_DELLINK {
					typ = "DEL"
				}
				a := u.Link.Attrs()
				t.Logf("%s fam=%d idx=%d name=%s flags=%v oper=%v change=%#x type=%s", typ, u.Family, u.Index, a.Name, a.Flags, a.OperState, u.Change, u.Link.Type())
			case <-time.After(200 * time.Millisecond):
				return
			}
		}
	}
	addVeth(t, h, "ta0", "tb0")
	dump("veth add")
	l := linkByName(t, h, "ta0")
	h.LinkSetUp(l)
	dump("ta0 up")
	h.LinkSetUp(linkByName(t, h, "tb0"))
	dump("tb0 up")
	h.LinkSetDown(l)
	dump("ta0 down")
	renameLink(t, h, "ta0", "xa0")
	dump("rename")
	if err := h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "d0"}}); err != nil {
		t.Logf("dummy: %v", err)
	}
	dump("dummy add")
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
		t.Logf("bridge: %v", err)
	} else {
		dump("bridge add")
		h.LinkSetMaster(linkByName(t, h, "tb0"), linkByName(t, h, "br0"))
		dump("enslave")
		h.LinkSetNoMaster(linkByName(t, h, "tb0"))
		dump("nomaster")
	}
	ns2, _ := testNetns(t)
	h.LinkSetNsFd(linkByName(t, h, "xa0"), int(ns2))
	dump("move xa0")
	addVeth(t, h, "tc0", "tc1")
	dump("add")
	delLink(t, h, "tc0")
	dump("veth del")
}
