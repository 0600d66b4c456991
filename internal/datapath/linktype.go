// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// LinkKind says where the IP header of a link's packets starts.
type LinkKind uint8

const (
	// LinkEthernet frames start with an Ethernet header (VLAN tags,
	// MPLS and PPPoE behind it are parsed).
	LinkEthernet LinkKind = iota
	// LinkIP packets start with the IP header: tun devices (WireGuard,
	// Tailscale, OpenVPN), PPP, IP-in-IP, SIT and GRE tunnels.
	LinkIP
)

func (k LinkKind) String() string {
	if k == LinkIP {
		return "ip"
	}
	return "ethernet"
}

// linkKindOf maps a link's ARPHRD type to how its packets start. Other
// link types (InfiniBand, CAN, 802.11 monitor, ...) carry headers rfm
// does not parse and are refused rather than miscounted.
func linkKindOf(arphrd uint16) (LinkKind, error) {
	switch arphrd {
	case unix.ARPHRD_ETHER, unix.ARPHRD_LOOPBACK:
		return LinkEthernet, nil
	case unix.ARPHRD_NONE, unix.ARPHRD_VOID, unix.ARPHRD_PPP, unix.ARPHRD_RAWIP,
		unix.ARPHRD_TUNNEL, unix.ARPHRD_TUNNEL6, unix.ARPHRD_SIT,
		unix.ARPHRD_IPGRE, unix.ARPHRD_IP6GRE:
		return LinkIP, nil
	}
	return 0, fmt.Errorf("link type %d (ARPHRD) is neither Ethernet nor bare IP", arphrd)
}

// linkType asks the kernel for a link's ARPHRD type, in the network
// namespace of the calling thread.
func linkType(ifindex int) (uint16, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(ifindex)
	req.AddData(msg)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return 0, fmt.Errorf("query link type: %w", err)
	}
	if len(msgs) == 0 {
		return 0, fmt.Errorf("query link type: no answer for ifindex %d", ifindex)
	}
	return nl.DeserializeIfInfomsg(msgs[0]).Type, nil
}
