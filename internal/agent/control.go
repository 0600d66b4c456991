// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/control"
	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/enrich/rd"
	"github.com/stepbrobd/rfm/internal/enrich/rib"
	"github.com/stepbrobd/rfm/internal/flow"
)

// controlAgent answers control requests from the running agent.
type controlAgent struct{ a *agent }

var _ control.Agent = controlAgent{}

func (c controlAgent) Status(context.Context) (control.Status, error) {
	a := c.a
	a.mu.Lock()
	cfg := a.cfg.Agent
	a.mu.Unlock()
	st := control.Status{
		Version:    Version,
		StartedAt:  a.startedAt,
		Uptime:     control.Seconds(time.Since(a.startedAt).Seconds()),
		ConfigPath: a.configPath,
		SampleRate: a.sampleRate.Load(),
		Interfaces: []control.InterfaceStatus{},
		Flows: control.FlowTableStatus{
			Active:          a.table.Active(),
			Capacity:        a.table.Capacity(),
			IdleTimeout:     a.table.IdleTimeout().String(),
			ForcedEvictions: a.table.ForcedEvictions(),
			IdleEvictions:   a.table.IdleEvictions(),
		},
		Datapath: control.DatapathStatus{RingBufSize: cfg.BPF.RingBufSize},
	}
	if m, err := readMemoryUsage(a.memory.lockedSource()); err == nil {
		st.Memory = &control.MemoryStatus{Anonymous: m.Anonymous, BPFLocked: m.BPFLocked, File: m.File}
	} else {
		a.log.Debug("status without memory", "err", err)
	}
	st.XDP = a.xdp.Load().status()
	counters, err := a.dp.Counters()
	if err != nil {
		return st, err
	}
	byIndex := map[int]*control.InterfaceStatus{}
	for _, ifc := range a.dp.Interfaces() {
		st.Interfaces = append(st.Interfaces, control.InterfaceStatus{Name: ifc.Name, Index: ifc.Index})
	}
	for i := range st.Interfaces {
		byIndex[st.Interfaces[i].Index] = &st.Interfaces[i]
	}
	for _, ctr := range counters {
		is := byIndex[ctr.Index]
		if is == nil {
			continue
		}
		var p, b uint64
		for f := range ctr.Packets {
			p += ctr.Packets[f]
			b += ctr.Bytes[f]
		}
		if ctr.Dir == datapath.Ingress {
			is.IngressPackets, is.IngressBytes = p, b
		} else {
			is.EgressPackets, is.EgressBytes = p, b
		}
	}
	if s, err := a.dp.Stats(); err == nil {
		st.Datapath.RingDrops, st.Datapath.Malformed = s.RingDrops, s.Malformed
	}
	for _, e := range a.ipfix.exporters() {
		s := e.Stats()
		st.IPFIXCollectors = append(st.IPFIXCollectors, control.IPFIXStatus{
			Collector: e.RemoteAddr().String(), Records: s.Records, Messages: s.Messages, Dropped: s.Dropped, Errors: s.Errors})
	}
	if len(st.IPFIXCollectors) > 0 {
		st.IPFIX = &st.IPFIXCollectors[0]
	}
	if a.station != nil {
		counts := a.rib.Counts()
		sum := a.rib.Summary()
		st.BMP = &control.BMPStatus{
			Listen: a.station.Addr().String(), Sessions: a.station.Sessions(),
			Routers: len(sum.Routers), Peers: counts.Peers, Routes4: counts.Routes4, Routes6: counts.Routes6,
		}
	}
	return st, nil
}

func (c controlAgent) Flows(_ context.Context, args control.FlowsArgs) (control.Flows, error) {
	a := c.a
	// Order by estimates: flows of two rates coexist after a rate change.
	est := func(r *flow.Record) (packets, bytes uint64) {
		return r.Packets * uint64(r.SampleRate), r.Bytes * uint64(r.SampleRate)
	}
	var less func(x, y *flow.Record) bool
	switch args.Sort {
	case "", "bytes":
		less = func(x, y *flow.Record) bool {
			xp, xb := est(x)
			yp, yb := est(y)
			return xb > yb || xb == yb && xp > yp
		}
	case "packets":
		less = func(x, y *flow.Record) bool {
			xp, xb := est(x)
			yp, yb := est(y)
			return xp > yp || xp == yp && xb > yb
		}
	default:
		return control.Flows{}, control.BadParam("sort", args.Sort, fmt.Sprintf("sort %q: want bytes or packets", args.Sort))
	}
	names := map[uint32]string{}
	for _, ifc := range a.dp.Interfaces() {
		names[uint32(ifc.Index)] = ifc.Name
	}
	var filter func(*flow.Key) bool
	if args.Iface != "" {
		idx, ok := uint32(0), false
		for i, n := range names {
			if n == args.Iface {
				idx, ok = i, true
			}
		}
		if !ok {
			return control.Flows{}, control.BadParam("iface", args.Iface, fmt.Sprintf("interface %q: not attached", args.Iface))
		}
		filter = func(k *flow.Key) bool { return k.Ifindex == idx }
	}
	recs := a.table.Top(args.Top, less, filter)
	out := control.Flows{SampleRate: a.sampleRate.Load(), Active: a.table.Active(), Flows: make([]control.Flow, len(recs))}
	for i := range recs {
		r := &recs[i]
		rate := uint64(r.SampleRate) // each flow's own: a rate change may be under way
		out.Flows[i] = control.Flow{
			Iface: names[r.Ifindex], Direction: r.Dir.String(), Proto: r.Proto,
			Src: r.SrcAddr(), Dst: r.DstAddr(), SrcPort: r.SrcPort, DstPort: r.DstPort,
			Packets: r.Packets * rate, Bytes: r.Bytes * rate, Sampled: r.Packets,
			Start: r.Start, LastSeen: r.End,
			SrcASN: r.SrcASN, DstASN: r.DstASN, SrcCity: r.SrcCity, DstCity: r.DstCity,
			DSCP: r.TOS >> 2, VLAN: r.VLANOuter, InnerVLAN: r.VLANInner,
			DstPrefixLen: r.BGP.DstPrefixLen,
		}
		if r.BGP.NextHop != ([16]byte{}) {
			out.Flows[i].BGPNextHop = netip.AddrFrom16(r.BGP.NextHop).Unmap()
		}
	}
	return out, nil
}

func (c controlAgent) RIBSummary(context.Context) (control.RIBSummary, error) {
	a := c.a
	out := control.RIBSummary{Enabled: a.rib != nil, Routers: []control.RIBRouter{}}
	if a.rib == nil {
		return out, nil
	}
	sum := a.rib.Summary()
	out.Routes4, out.Routes6 = sum.Routes4, sum.Routes6
	out.Prefixes4, out.Prefixes6 = sum.Prefixes4, sum.Prefixes6
	for _, r := range sum.Routers {
		rr := control.RIBRouter{Addr: r.Router.Addr, Name: r.Router.Name, Descr: r.Descr, Connected: r.Connected, Peers: []control.RIBPeer{}}
		for _, p := range r.Peers {
			cp := control.RIBPeer{
				Addr: p.Peer.Addr, Type: p.Peer.Type, Distinguisher: p.Peer.Distinguisher,
				ASN: p.ASN, BGPID: p.BGPID, Stale: p.Stale, Routes4: p.Routes4, Routes6: p.Routes6,
			}
			if !p.Peer.Global() {
				cp.RD = rd.Format(p.Peer.Distinguisher)
			}
			rr.Peers = append(rr.Peers, cp)
		}
		out.Routers = append(out.Routers, rr)
	}
	out.VRFs = []control.RIBVRF{}
	for _, v := range sum.VRFs {
		out.VRFs = append(out.VRFs, control.RIBVRF{
			RIBVRFKey: vrfKey(v.VRF, v.LabelsFlows), Peers: v.Peers, Routes4: v.Routes4, Routes6: v.Routes6,
		})
	}
	return out, nil
}

func vrfKey(k rib.VRFKey, labelsFlows bool) control.RIBVRFKey {
	return control.RIBVRFKey{
		Router: k.Router.Addr, RouterName: k.Router.Name,
		RD: rd.Format(k.Distinguisher), Distinguisher: k.Distinguisher, LabelsFlows: labelsFlows,
	}
}

func (c controlAgent) RIBLookup(_ context.Context, addr netip.Addr) (control.RIBLookup, error) {
	a := c.a
	addr = addr.Unmap()
	out := control.RIBLookup{Addr: addr, Routes: []control.RIBRoute{}}
	if db := a.enricher.DB(); db != nil {
		out.MMDBASN, out.MMDBCity = db.ASN(addr), db.City(addr)
	}
	out.FlowASN = a.enricher.ASN(addr)
	route := func(r rib.RouteInfo) control.RIBRoute {
		out := control.RIBRoute{
			Prefix: r.Prefix, Origin: r.Origin, ASPath: r.Path.String(),
			Router: r.Router.Addr, RouterName: r.Router.Name,
			Peer: r.Peer.Addr, PeerASN: r.PeerASN, View: r.View.String(), PathID: r.PathID,
			NextHop: r.Path.NextHop(),
		}
		for _, c := range r.Path.Communities() {
			out.Communities = append(out.Communities, fmt.Sprintf("%d:%d", c>>16, c&0xffff))
		}
		for _, c := range r.Path.LargeCommunities() {
			out.LargeCommunities = append(out.LargeCommunities, fmt.Sprintf("%d:%d:%d", c.Global, c.Local1, c.Local2))
		}
		return out
	}
	for _, r := range a.rib.LookupAll(addr) {
		out.Routes = append(out.Routes, route(r))
	}
	out.VRFs = []control.RIBVRFRoutes{}
	for _, v := range a.rib.LookupVRFs(addr) {
		vr := control.RIBVRFRoutes{RIBVRFKey: vrfKey(v.VRF, v.LabelsFlows)}
		for _, r := range v.Routes {
			vr.Routes = append(vr.Routes, route(r))
		}
		out.VRFs = append(out.VRFs, vr)
	}
	return out, nil
}

func (c controlAgent) SetSampleRate(_ context.Context, rate uint32) (control.SampleRateChange, error) {
	a := c.a
	a.mu.Lock()
	defer a.mu.Unlock()
	prev, err := a.setSampleRate(rate)
	if err != nil {
		return control.SampleRateChange{}, err
	}
	a.log.Info("sample rate changed over the control socket", "previous", prev, "rate", rate)
	return control.SampleRateChange{Previous: prev, Rate: rate}, nil
}

func (c controlAgent) Reload(context.Context) (control.ReloadResult, error) {
	res, err := c.a.reload()
	if err != nil {
		c.a.log.Error("reload rejected; the running config stays in effect", "err", err)
		return res, err
	}
	c.a.logReload(res.Applied, res.NeedsRestart)
	return res, nil
}

// controlStage is the control socket. It binds when constructed, so a
// second agent on the same socket stops before anything is attached,
// and answers from start.
type controlStage struct {
	a   *agent
	srv *control.Server // nil without a socket
}

func (a *agent) newControlStage() (component, error) {
	cs := &controlStage{a: a}
	if path := a.cfg.Agent.Control.Socket; path != "" {
		var err error
		if cs.srv, err = control.Listen(path, a.log); err != nil {
			return nil, err
		}
	}
	return cs, nil
}

func (cs *controlStage) name() string { return "control socket" }

// start answers control requests until stop.
func (cs *controlStage) start() error {
	if cs.srv != nil {
		go func() {
			if err := cs.srv.Serve(context.Background(), controlAgent{cs.a}); err != nil {
				cs.a.log.Error("control socket stopped", "err", err)
			}
		}()
	}
	return nil
}

func (cs *controlStage) reconfigure(cur, next *config.Config) (reconfig, error) {
	var rc reconfig
	if cur.Agent.Control != next.Agent.Control {
		rc.needsRestart = []string{"agent.control.socket"}
		next.Agent.Control = cur.Agent.Control
	}
	return rc, nil
}

// stop waits for the requests in progress and removes the socket.
func (cs *controlStage) stop() error {
	if cs.srv != nil {
		cs.srv.Close()
	}
	return nil
}
