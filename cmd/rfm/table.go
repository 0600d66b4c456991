// SPDX-License-Identifier: AGPL-3.0-only

package main

// Human tables for the control commands. Each render function writes
// the answer of one command; `--json` bypasses them and prints the
// agent's data as it came.

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/stepbrobd/rfm/internal/control"
	"github.com/stepbrobd/rfm/internal/enrich/rd"
	"github.com/stepbrobd/rfm/internal/export/prom"
)

// table aligns rows in columns two spaces apart, without trailing
// spaces where the last cells are empty.
type table struct {
	out io.Writer
	buf bytes.Buffer
	tw  *tabwriter.Writer
}

func newTable(w io.Writer) *table {
	t := &table{out: w}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 0, 2, ' ', 0)
	return t
}

// row writes cells as one table row.
func row(t *table, cells ...string) {
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

// section writes the rows so far and starts another table below them,
// a blank line apart, with a header row.
func (t *table) section(header ...string) error {
	if err := t.Flush(); err != nil {
		return err
	}
	if _, err := io.WriteString(t.out, "\n"); err != nil {
		return err
	}
	row(t, header...)
	return nil
}

// Flush writes the aligned rows.
func (t *table) Flush() error {
	if err := t.tw.Flush(); err != nil {
		return err
	}
	var b strings.Builder
	for _, line := range strings.SplitAfter(t.buf.String(), "\n") {
		if line == "" {
			continue
		}
		b.WriteString(strings.TrimRight(line, " \n"))
		b.WriteByte('\n')
	}
	t.buf.Reset()
	_, err := io.WriteString(t.out, b.String())
	return err
}

// humanBytes renders n with binary units: 512 B, 1.5 KiB, 3.2 GiB.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	for _, suffix := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		v /= unit
		if v < unit || suffix == "PiB" {
			return fmt.Sprintf("%.1f %s", v, suffix)
		}
	}
	panic("unreachable")
}

// bufferSize renders a power-of-two size exactly: 4 KiB, 256 KiB, 16 MiB.
func bufferSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// formatUptime renders d to the second, with days: 3d4h5m6s.
func formatUptime(d time.Duration) string {
	d = d.Round(time.Second)
	if d < 24*time.Hour {
		return d.String()
	}
	days := d / (24 * time.Hour)
	return fmt.Sprintf("%dd%s", days, (d - days*24*time.Hour).String())
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

func renderStatus(w io.Writer, s control.Status) error {
	tw := newTable(w)
	row(tw, "rfm", fmt.Sprintf("%s, up %s", s.Version, formatUptime(s.Uptime.Duration())))
	row(tw, "config", s.ConfigPath)
	row(tw, "sample rate", fmt.Sprintf("1 in %d", s.SampleRate))
	capacity := "unlimited"
	if s.Flows.Capacity > 0 {
		capacity = strconv.Itoa(s.Flows.Capacity)
	}
	row(tw, "flows", fmt.Sprintf("%d active of %s, idle timeout %s, evictions: %d forced, %d idle",
		s.Flows.Active, capacity, s.Flows.IdleTimeout, s.Flows.ForcedEvictions, s.Flows.IdleEvictions))
	row(tw, "datapath", fmt.Sprintf("ring buffer %s, %d ring drops, %d malformed",
		bufferSize(s.Datapath.RingBufSize), s.Datapath.RingDrops, s.Datapath.Malformed))
	cols := s.IPFIXCollectors
	if len(cols) == 0 && s.IPFIX != nil {
		cols = []control.IPFIXStatus{*s.IPFIX} // an agent from before several collectors
	}
	for _, x := range cols {
		row(tw, "ipfix", fmt.Sprintf("to %s: %d records in %d messages, %d dropped, %d errors",
			x.Collector, x.Records, x.Messages, x.Dropped, x.Errors))
	}
	if len(cols) == 0 {
		row(tw, "ipfix", "disabled")
	}
	if b := s.BMP; b != nil {
		row(tw, "bmp", fmt.Sprintf("on %s: %s, %s, %s; routes: %d IPv4, %d IPv6",
			b.Listen, plural(b.Sessions, "session", "sessions"), plural(b.Routers, "router", "routers"),
			plural(b.Peers, "peer", "peers"), b.Routes4, b.Routes6))
	} else {
		row(tw, "bmp", "disabled")
	}
	if m := s.Memory; m != nil {
		row(tw, "memory", fmt.Sprintf("%s anonymous + %s BPF locked; %s file-backed (clean pages, page cache)",
			humanBytes(m.Anonymous), humanBytes(m.BPFLocked), humanBytes(m.File)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(s.Interfaces) == 0 {
		_, err := fmt.Fprintln(w, "no interfaces attached")
		return err
	}
	tw = newTable(w)
	row(tw, "INTERFACE", "INDEX", "INGRESS PACKETS", "INGRESS BYTES", "EGRESS PACKETS", "EGRESS BYTES")
	for _, ifc := range s.Interfaces {
		row(tw, ifc.Name, strconv.Itoa(ifc.Index),
			strconv.FormatUint(ifc.IngressPackets, 10), humanBytes(ifc.IngressBytes),
			strconv.FormatUint(ifc.EgressPackets, 10), humanBytes(ifc.EgressBytes))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return renderXDPStatus(w, s.XDP)
}

// hasPorts reports whether proto's flows carry ports: TCP, UDP, SCTP,
// UDP-Lite.
func hasPorts(proto uint8) bool {
	switch proto {
	case 6, 17, 132, 136:
		return true
	}
	return false
}

// endpoint renders addr:port (IPv6 in brackets), or the bare address
// for protocols without ports.
func endpoint(addr netip.Addr, port uint16, proto uint8) string {
	if !hasPorts(proto) {
		return addr.String()
	}
	return netip.AddrPortFrom(addr, port).String()
}

func asn(n uint32) string {
	if n == 0 {
		return ""
	}
	return "AS" + strconv.FormatUint(uint64(n), 10)
}

// dstRoute shows the destination's BGP route as "/24 via 192.0.2.1":
// the matched prefix length and the next hop, each when known.
func dstRoute(fl control.Flow) string {
	s := ""
	if fl.DstPrefixLen != 0 || fl.BGPNextHop.IsValid() {
		s = "/" + strconv.Itoa(int(fl.DstPrefixLen))
	}
	if fl.BGPNextHop.IsValid() {
		s += " via " + fl.BGPNextHop.String()
	}
	return s
}

// renderFlows writes the flow table; args is what was asked, for the
// heading.
func renderFlows(w io.Writer, f control.Flows, args control.FlowsArgs) error {
	sortBy := args.Sort
	if sortBy == "" {
		sortBy = "bytes"
	}
	where := ""
	if args.Iface != "" {
		where = " on " + args.Iface
	}
	fmt.Fprintf(w, "%d of %d active flows%s by %s; packets and bytes estimated at sample rate 1 in %d\n",
		len(f.Flows), f.Active, where, sortBy, f.SampleRate)
	if len(f.Flows) == 0 {
		return nil
	}
	// Enrichment columns only when some flow has them.
	var withASN, withCity, withRoute bool
	for _, fl := range f.Flows {
		withASN = withASN || fl.SrcASN != 0 || fl.DstASN != 0
		withCity = withCity || fl.SrcCity != "" || fl.DstCity != ""
		withRoute = withRoute || fl.BGPNextHop.IsValid() || fl.DstPrefixLen != 0
	}
	tw := newTable(w)
	head := []string{"IFACE", "DIR", "PROTO", "SOURCE", "DESTINATION", "PACKETS", "BYTES"}
	if withASN {
		head = append(head, "SRC ASN", "DST ASN")
	}
	if withCity {
		head = append(head, "SRC CITY", "DST CITY")
	}
	if withRoute {
		head = append(head, "DST ROUTE")
	}
	row(tw, head...)
	for _, fl := range f.Flows {
		cells := []string{fl.Iface, fl.Direction, prom.ProtoName(fl.Proto),
			endpoint(fl.Src, fl.SrcPort, fl.Proto), endpoint(fl.Dst, fl.DstPort, fl.Proto),
			strconv.FormatUint(fl.Packets, 10), humanBytes(fl.Bytes)}
		if withASN {
			cells = append(cells, asn(fl.SrcASN), asn(fl.DstASN))
		}
		if withCity {
			cells = append(cells, fl.SrcCity, fl.DstCity)
		}
		if withRoute {
			cells = append(cells, dstRoute(fl))
		}
		row(tw, cells...)
	}
	return tw.Flush()
}

// peerType names a BMP peer type (RFC 7854, RFC 9069) with the
// distinguisher of a VRF peer.
func peerType(p control.RIBPeer) string {
	switch {
	case p.Type == 0:
		return "global"
	case p.Type == 1:
		return "rd " + rd.Format(p.Distinguisher)
	case p.Type == 2:
		return "local " + rd.Format(p.Distinguisher)
	case p.Type == 3 && p.Distinguisher == 0:
		return "loc-rib"
	case p.Type == 3:
		return "loc-rib rd " + rd.Format(p.Distinguisher)
	}
	return "type " + strconv.Itoa(int(p.Type))
}

// peerAddr renders a BMP peer address; Loc-RIB "peers" (RFC 9069) have
// none and show as "-".
func peerAddr(a netip.Addr) string {
	if !a.IsValid() || a.IsUnspecified() {
		return "-"
	}
	return a.String()
}

func renderRIBSummary(w io.Writer, r control.RIBSummary) error {
	if !r.Enabled {
		_, err := fmt.Fprintln(w, "no RIB: the BMP station is disabled (set agent.enrich.rib.bmp host and port)")
		return err
	}
	tw := newTable(w)
	row(tw, "routes", fmt.Sprintf("%d IPv4 (%d prefixes), %d IPv6 (%d prefixes)", r.Routes4, r.Prefixes4, r.Routes6, r.Prefixes6))
	row(tw, "routers", strconv.Itoa(len(r.Routers)))
	if len(r.Routers) == 0 {
		return tw.Flush()
	}
	if err := tw.section("ROUTER", "NAME", "STATE", "PEER", "TYPE", "ASN", "BGP ID", "IPV4 ROUTES", "IPV6 ROUTES"); err != nil {
		return err
	}
	for _, rt := range r.Routers {
		state := "connected"
		if !rt.Connected {
			state = "disconnected"
		}
		name := rt.Name
		if name == "" {
			name = "-"
		}
		router := []string{rt.Addr.String(), name, state}
		if len(rt.Peers) == 0 {
			row(tw, append(router, "-", "", "", "", "", "")...)
			continue
		}
		for i, p := range rt.Peers {
			if i == 1 {
				router = []string{"", "", ""} // the router once, above its peers
			}
			peer := peerAddr(p.Addr)
			if p.Stale {
				peer += " (stale)"
			}
			row(tw, append(router, peer, peerType(p), asn(p.ASN), p.BGPID.String(),
				strconv.Itoa(p.Routes4), strconv.Itoa(p.Routes6))...)
		}
	}
	if len(r.VRFs) == 0 {
		return tw.Flush()
	}
	if err := tw.section("VRF RD", "ROUTER", "PEERS", "IPV4 ROUTES", "IPV6 ROUTES", "LABELS FLOWS"); err != nil {
		return err
	}
	for _, v := range r.VRFs {
		row(tw, v.RD, routerName(v.Router, v.RouterName), strconv.Itoa(v.Peers),
			strconv.Itoa(v.Routes4), strconv.Itoa(v.Routes6), yesNo(v.LabelsFlows))
	}
	return tw.Flush()
}

func routerName(a netip.Addr, name string) string {
	if name == "" {
		return a.String()
	}
	return name + " " + a.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func renderRIBLookup(w io.Writer, l control.RIBLookup) error {
	if len(l.Routes) == 0 {
		fmt.Fprintf(w, "%s: no route\n", l.Addr)
	} else {
		fmt.Fprintf(w, "%s: %s for %s\n", l.Addr, plural(len(l.Routes), "route", "routes"), l.Routes[0].Prefix)
		if l.Routes[0].Prefix.Bits() == 0 {
			fmt.Fprintln(w, "(a default route: never used for the origin AS of flows)")
		}
		if err := routesTable(w, l.Routes); err != nil {
			return err
		}
	}
	for _, v := range l.VRFs {
		labels := "does not label flows"
		if v.LabelsFlows {
			labels = "labels flows"
		}
		fmt.Fprintf(w, "\nvrf rd %s on %s (%s): %s for %s\n", v.RD, routerName(v.Router, v.RouterName), labels,
			plural(len(v.Routes), "route", "routes"), v.Routes[0].Prefix)
		if err := routesTable(w, v.Routes); err != nil {
			return err
		}
	}
	if l.FlowASN != 0 {
		fmt.Fprintf(w, "flow label: %s\n", asn(l.FlowASN))
	}
	if l.MMDBASN != 0 || l.MMDBCity != "" {
		var parts []string
		if l.MMDBASN != 0 {
			parts = append(parts, asn(l.MMDBASN))
		}
		if l.MMDBCity != "" {
			parts = append(parts, l.MMDBCity)
		}
		fmt.Fprintf(w, "mmdb: %s\n", strings.Join(parts, ", "))
	}
	return nil
}

// routesTable lists routes of one prefix, best first.
func routesTable(w io.Writer, routes []control.RIBRoute) error {
	withPathID, withNextHop, withCommunities := false, false, false
	for _, r := range routes {
		withPathID = withPathID || r.PathID != 0
		withNextHop = withNextHop || r.NextHop.IsValid()
		withCommunities = withCommunities || len(r.Communities)+len(r.LargeCommunities) > 0
	}
	tw := newTable(w)
	head := []string{"PREFIX", "ORIGIN", "AS PATH", "ROUTER", "PEER", "VIEW"}
	if withPathID {
		head = append(head, "PATH ID")
	}
	if withNextHop {
		head = append(head, "NEXT HOP")
	}
	if withCommunities {
		head = append(head, "COMMUNITIES")
	}
	row(tw, head...)
	for _, r := range routes {
		origin := asn(r.Origin)
		if origin == "" {
			origin = "?"
		}
		peer := strings.TrimSpace(strings.TrimPrefix(peerAddr(r.Peer), "-") + " " + asn(r.PeerASN))
		cells := []string{r.Prefix.String(), origin, r.ASPath, routerName(r.Router, r.RouterName), peer, r.View}
		if withPathID {
			cells = append(cells, strconv.FormatUint(uint64(r.PathID), 10))
		}
		if withNextHop {
			nh := "-"
			if r.NextHop.IsValid() {
				nh = r.NextHop.String()
			}
			cells = append(cells, nh)
		}
		if withCommunities {
			cells = append(cells, strings.Join(append(append([]string(nil), r.Communities...), r.LargeCommunities...), " "))
		}
		row(tw, cells...)
	}
	return tw.Flush()
}

func renderSampleRate(w io.Writer, c control.SampleRateChange) error {
	_, err := fmt.Fprintf(w, "sample rate %d -> %d\n", c.Previous, c.Rate)
	return err
}

func renderReload(w io.Writer, r control.ReloadResult) error {
	if len(r.Applied) == 0 {
		fmt.Fprintln(w, "reloaded: nothing changed")
	} else {
		fmt.Fprintf(w, "reloaded: applied %s\n", strings.Join(r.Applied, ", "))
	}
	if len(r.NeedsRestart) > 0 {
		fmt.Fprintf(w, "changed but needs a restart of the agent: %s\n", strings.Join(r.NeedsRestart, ", "))
	}
	return nil
}
