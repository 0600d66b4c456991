// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import "github.com/cilium/ebpf"

// SharedMaps are the maps another program (the XDP fast path of
// internal/datapath/xdp) uses to count and sample the packets it drops
// before the TC programs could see them, by name as in bpf/rfm.c: config,
// sampler, ring buffer, stats, and where the interface counters are. The
// caller must not close them; they live as long as the Datapath. Of
// rfm_config the XDP program reads only sample_rate, which must stay the
// first member of struct rfm_config.
func (d *Datapath) SharedMaps() map[string]*ebpf.Map {
	out := map[string]*ebpf.Map{}
	for _, name := range []string{rfmMapRfmConfig, rfmMapRfmCounters, rfmMapRfmIfaceSlots,
		rfmMapRfmIfaceSpill, rfmMapRfmDpStats, rfmMapRfmSampler, rfmMapRfmEvents} {
		out[name] = d.shared[name]
	}
	return out
}

// Fields are the optional fields the datapath was loaded with: another
// program writing into its ring must write events of the same layout.
func (d *Datapath) Fields() Fields { return d.fields }
