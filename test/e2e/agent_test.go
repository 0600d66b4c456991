// SPDX-License-Identifier: AGPL-3.0-only

package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

const udpPort = 5001

// TestInterfaceCounters checks exact per-family packet and byte counts on
// the sender's veth: frame bytes = 14 + IP total length.
func TestInterfaceCounters(t *testing.T) {
	l := newLab(t, labOptions{})
	recv := listenUDP(t, l.nsB, udpPort)
	a := startAgent(t, l.nsA, agentConfig{interfaces: []string{l.vethA}, sampleRate: 1}.toml())

	const n4, n6, nOther, payload = 100, 50, 7, 100
	dialUDP(t, l.nsA, l.ipA, l.ipB, 0, udpPort, false).send(t, n4, payload)
	dialUDP(t, l.nsA, l.ip6A, l.ip6B, 0, udpPort, false).send(t, n6, payload)
	sendNonIP(t, l.nsA, l.vethA, l.macA, l.macB, nOther)
	recv.waitCount(t, n4+n6)

	want := map[string][2]float64{ // family -> packets, bytes
		"ipv4":  {n4, n4 * float64(14+udpIPLen(l.ipA, payload))},
		"ipv6":  {n6, n6 * float64(14+udpIPLen(l.ip6A, payload))},
		"other": {nOther, nOther * nonIPFrameLen},
	}
	m := a.waitFor(t, 10*time.Second, "exact tx counters", func(m metrics) bool {
		for family, w := range want {
			if m.sum("rfm_interface_tx_packets_total", "ifname", l.vethA, "family", family) != w[0] ||
				m.sum("rfm_interface_tx_bytes_total", "ifname", l.vethA, "family", family) != w[1] {
				return false
			}
		}
		return true
	})
	// Nothing comes back: the receiver binds the port and neighbours are static.
	for _, name := range []string{"rfm_interface_rx_packets_total", "rfm_interface_rx_bytes_total"} {
		if got := m.sum(name, "ifname", l.vethA); got != 0 {
			t.Errorf("%s{ifname=%s} = %g, want 0\n%s", name, l.vethA, got, m.dump("rfm_interface_"))
		}
	}
}

// TestFlowSampling checks flow gauges: exact sampled counts with
// sample_rate 1, and the scaling relation with sample_rate 10.
func TestFlowSampling(t *testing.T) {
	t.Run("rate1", func(t *testing.T) {
		l := newLab(t, labOptions{})
		recv := listenUDP(t, l.nsB, udpPort)
		a := startAgent(t, l.nsA, agentConfig{interfaces: []string{l.vethA}, sampleRate: 1}.toml())
		const n4, n6, payload = 30, 20, 64
		dialUDP(t, l.nsA, l.ipA, l.ipB, 0, udpPort, false).send(t, n4, payload)
		dialUDP(t, l.nsA, l.ip6A, l.ip6B, 0, udpPort, false).send(t, n6, payload)
		recv.waitCount(t, n4+n6)

		wantPackets := float64(n4 + n6)
		wantBytes := float64(n4*udpIPLen(l.ipA, payload) + n6*udpIPLen(l.ip6A, payload))
		sel := []string{"ifname", l.vethA, "direction", "egress", "proto", "udp"}
		m := a.waitFor(t, 10*time.Second, "sampled egress udp flows", func(m metrics) bool {
			return m.sum("rfm_flow_sampled_packets", sel...) == wantPackets &&
				m.sum("rfm_flow_sampled_bytes", sel...) == wantBytes
		})
		if got := m.sum("rfm_flow_packets", sel...); got != wantPackets {
			t.Errorf("rfm_flow_packets = %g, want %g (rate 1)\n%s", got, wantPackets, m.dump("rfm_flow_"))
		}
		if got := m.sum("rfm_flow_bytes", sel...); got != wantBytes {
			t.Errorf("rfm_flow_bytes = %g, want %g (rate 1)\n%s", got, wantBytes, m.dump("rfm_flow_"))
		}
		if got := m.sum("rfm_flow_sampled_packets", "ifname", l.vethA, "direction", "ingress"); got != 0 {
			t.Errorf("ingress sampled packets = %g, want 0\n%s", got, m.dump("rfm_flow_"))
		}
		// No enrichment configured: exactly one series with empty labels.
		for _, s := range m {
			if s.Name != "rfm_flow_sampled_packets" {
				continue
			}
			for _, key := range []string{"src_asn", "dst_asn", "src_city", "dst_city"} {
				if v, ok := s.Labels[key]; !ok || v != "" {
					t.Errorf("%s%v: label %s = %q (present %v), want present and empty", s.Name, s.Labels, key, v, ok)
				}
			}
		}
	})
	t.Run("rate10", func(t *testing.T) {
		l := newLab(t, labOptions{})
		recv := listenUDP(t, l.nsB, udpPort)
		const rate = 10
		a := startAgent(t, l.nsA, agentConfig{interfaces: []string{l.vethA}, sampleRate: rate}.toml())
		const n, payload = 500, 64
		dialUDP(t, l.nsA, l.ipA, l.ipB, 0, udpPort, false).send(t, n, payload)
		recv.waitCount(t, n)
		sel := []string{"ifname", l.vethA, "direction", "egress", "proto", "udp"}
		m := a.waitFor(t, 10*time.Second, "exact tx counters and some samples", func(m metrics) bool {
			return m.sum("rfm_interface_tx_packets_total", "ifname", l.vethA, "family", "ipv4") == n &&
				m.sum("rfm_flow_sampled_packets", sel...) > 0
		})
		sp, sb := m.sum("rfm_flow_sampled_packets", sel...), m.sum("rfm_flow_sampled_bytes", sel...)
		if got := m.sum("rfm_flow_packets", sel...); got != rate*sp {
			t.Errorf("rfm_flow_packets = %g, want %d * %g\n%s", got, rate, sp, m.dump("rfm_flow_"))
		}
		if got := m.sum("rfm_flow_bytes", sel...); got != rate*sb {
			t.Errorf("rfm_flow_bytes = %g, want %d * %g\n%s", got, rate, sb, m.dump("rfm_flow_"))
		}
		if sb != sp*float64(udpIPLen(l.ipA, payload)) {
			t.Errorf("sampled bytes %g != sampled packets %g * %d", sb, sp, udpIPLen(l.ipA, payload))
		}
	})
}

// TestVLAN checks 802.1Q and QinQ (802.1ad outer, 802.1Q inner) IPv4
// frames are counted as ipv4 with wire-length bytes in both directions.
// The frames are crafted on packet sockets because this kernel has no
// 8021q module: at egress the tags stay in packet data (as with tx-vlan
// offload off); at ingress the kernel moves the outer tag into skb
// metadata before TC runs, so the agent must add its 4 bytes back.
func TestVLAN(t *testing.T) {
	for _, mode := range []struct {
		name string
		tags []vlanTag
	}{
		{"8021q", []vlanTag{{0x8100, 100}}},
		{"qinq", []vlanTag{{0x88a8, 200}, {0x8100, 100}}},
	} {
		{
			// tx-vlan offload would only matter for tags inserted by a
			// VLAN device, which this kernel cannot create.
			t.Run(mode.name, func(t *testing.T) {
				l := newLab(t, labOptions{})
				a := startAgent(t, l.nsA, agentConfig{interfaces: []string{l.vethA}, sampleRate: 1}.toml())

				const out, in, payload = 20, 15, 100
				sendFrames(t, l.nsA, l.vethA, taggedUDP4Frame(l.macB, l.macA, mode.tags, l.ipA, l.ipB, 40000, udpPort, payload), out)
				sendFrames(t, l.nsB, l.vethB, taggedUDP4Frame(l.macA, l.macB, mode.tags, l.ipB, l.ipA, 40001, udpPort, payload), in)

				frame := float64(14 + 4*len(mode.tags) + udpIPLen(l.ipA, payload))
				m := a.waitFor(t, 10*time.Second, "ipv4 counters in both directions", func(m metrics) bool {
					return m.sum("rfm_interface_tx_packets_total", "ifname", l.vethA, "family", "ipv4") == out &&
						m.sum("rfm_interface_rx_packets_total", "ifname", l.vethA, "family", "ipv4") == in
				})
				if got := m.sum("rfm_interface_tx_bytes_total", "ifname", l.vethA, "family", "ipv4"); got != out*frame {
					t.Errorf("tx bytes = %g, want %g\n%s", got, out*frame, m.dump("rfm_interface_"))
				}
				if got := m.sum("rfm_interface_rx_bytes_total", "ifname", l.vethA, "family", "ipv4"); got != in*frame {
					t.Errorf("rx bytes = %g, want %g\n%s", got, in*frame, m.dump("rfm_interface_"))
				}
				for _, name := range []string{"rfm_interface_tx_packets_total", "rfm_interface_rx_packets_total"} {
					if got := m.sum(name, "ifname", l.vethA, "family", "other"); got != 0 {
						t.Errorf("%s{family=other} = %g, want 0 (tagged IPv4 misclassified)\n%s", name, got, m.dump("rfm_interface_"))
					}
				}
				// Flow events see the IP packet behind the tags.
				ipLen := float64(udpIPLen(l.ipA, payload))
				m = a.waitFor(t, 10*time.Second, "udp flows in both directions", func(m metrics) bool {
					return m.sum("rfm_flow_sampled_packets", "ifname", l.vethA, "direction", "egress", "proto", "udp") == out &&
						m.sum("rfm_flow_sampled_packets", "ifname", l.vethA, "direction", "ingress", "proto", "udp") == in
				})
				for dir, n := range map[string]float64{"egress": out, "ingress": in} {
					if got := m.sum("rfm_flow_sampled_bytes", "ifname", l.vethA, "direction", dir, "proto", "udp"); got != n*ipLen {
						t.Errorf("%s sampled bytes = %g, want %g\n%s", dir, got, n*ipLen, m.dump("rfm_flow_"))
					}
				}
			})
		}
	}
}

// TestFragments checks every IP fragment of an oversized UDP datagram is
// sampled as proto udp (non-initial fragments export ports 0).
func TestFragments(t *testing.T) {
	for _, family := range []string{"ipv4", "ipv6"} {
		t.Run(family, func(t *testing.T) {
			l := newLab(t, labOptions{})
			recv := listenUDP(t, l.nsB, udpPort)
			a := startAgent(t, l.nsA, agentConfig{interfaces: []string{l.vethA}, sampleRate: 1}.toml())
			src, dst := l.ipA, l.ipB
			if family == "ipv6" {
				src, dst = l.ip6A, l.ip6B
			}
			const datagrams, payload, mtu = 4, 3000, 1500
			frags := fragmentCount(src, payload, mtu)
			dialUDP(t, l.nsA, src, dst, 0, udpPort, true).send(t, datagrams, payload)
			recv.waitCount(t, datagrams)
			want := float64(datagrams * frags)
			m := a.waitFor(t, 10*time.Second, "tx counter equals fragment count", func(m metrics) bool {
				return m.sum("rfm_interface_tx_packets_total", "ifname", l.vethA, "family", family) == want
			})
			m = a.waitFor(t, 10*time.Second, fmt.Sprintf("%g udp sampled packets", want), func(m metrics) bool {
				return m.sum("rfm_flow_sampled_packets", "ifname", l.vethA, "direction", "egress", "proto", "udp") >= want
			})
			if got := m.sum("rfm_flow_sampled_packets", "ifname", l.vethA, "direction", "egress"); got != want {
				t.Errorf("egress sampled packets (all protos) = %g, want %g\n%s", got, want, m.dump("rfm_flow_"))
			}
			// Bytes: every fragment's IP total length, summed, is the
			// datagram plus one IP header (and fragment header) per extra fragment.
			hdr := 20
			if family == "ipv6" {
				hdr = 40 + 8
			}
			wantBytes := float64(datagrams * (8 + payload + frags*hdr))
			if got := m.sum("rfm_flow_sampled_bytes", "ifname", l.vethA, "direction", "egress", "proto", "udp"); got != wantBytes {
				t.Errorf("udp sampled bytes = %g, want %g\n%s", got, wantBytes, m.dump("rfm_flow_"))
			}
		})
	}
}

// TestEviction checks idle eviction and forced eviction at max_flows.
func TestEviction(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		l := newLab(t, labOptions{})
		recv := listenUDP(t, l.nsB, udpPort)
		a := startAgent(t, l.nsA, agentConfig{interfaces: []string{l.vethA}, sampleRate: 1, evictionTimeout: "1s"}.toml())
		dialUDP(t, l.nsA, l.ipA, l.ipB, 0, udpPort, false).send(t, 10, 32)
		recv.waitCount(t, 10)
		a.waitFor(t, 5*time.Second, "an active flow", func(m metrics) bool {
			return m.sum("rfm_collector_active_flows") >= 1
		})
		a.waitFor(t, 15*time.Second, "active flows back to 0 after 1s idle", func(m metrics) bool {
			return m.has("rfm_collector_active_flows") && m.sum("rfm_collector_active_flows") == 0
		})
	})
	t.Run("max_flows", func(t *testing.T) {
		l := newLab(t, labOptions{})
		recv := listenUDP(t, l.nsB, udpPort)
		a := startAgent(t, l.nsA, agentConfig{interfaces: []string{l.vethA}, sampleRate: 1, maxFlows: 2}.toml())
		const flows = 5
		for i := 0; i < flows; i++ {
			dialUDP(t, l.nsA, l.ipA, l.ipB, 40000+i, udpPort, false).send(t, 2, 32)
		}
		recv.waitCount(t, 2*flows)
		m := a.waitFor(t, 10*time.Second, "forced evictions >= 3", func(m metrics) bool {
			return m.sum("rfm_collector_forced_evictions_total") >= flows-2
		})
		if got := m.sum("rfm_collector_active_flows"); got > 2 {
			t.Errorf("active flows = %g with max_flows = 2\n%s", got, m.dump("rfm_collector_"))
		}
		if got := m.sum("rfm_collector_dropped_events_total"); got != 0 {
			t.Errorf("dropped events = %g, want 0", got)
		}
	})
}

// TestShutdown checks SIGTERM makes the agent exit 0 promptly and detach.
func TestShutdown(t *testing.T) {
	l := newLab(t, labOptions{})
	a := startAgent(t, l.nsA, agentConfig{interfaces: []string{l.vethA}, sampleRate: 1}.toml())
	idx := ifindex(t, l.nsA, l.vethA)
	if in, eg := lab.AttachedPrograms(t, l.nsA, idx); in < 1 || eg < 1 {
		t.Fatalf("while running: %d ingress, %d egress TCX programs on %s, want >= 1 each", in, eg, l.vethA)
	}
	start := time.Now()
	if err := a.stop(t, 5*time.Second); err != nil {
		t.Fatalf("agent exit after SIGTERM: %v, want exit 0; output:\n%s", err, a.Output())
	}
	t.Logf("agent exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	if in, eg := lab.AttachedPrograms(t, l.nsA, idx); in != 0 || eg != 0 {
		t.Errorf("after exit: %d ingress, %d egress TCX programs still on %s", in, eg, l.vethA)
	}
}
