// SPDX-License-Identifier: GPL-2.0-only
//
// What bpf/rfm.c (the TC programs) and bpf/xdp.c (the XDP fast path)
// share: the event layout, the config, the interface counters and the
// maps that hold them. The XDP program counts and samples the packets it
// drops into the same maps (userspace hands it the TC datapath's maps),
// so both must see one definition.

#ifndef RFM_SHARED_H
#define RFM_SHARED_H

// Families index the counter arrays; keep in sync with internal/datapath.
enum rfm_family {
	RFM_FAM_OTHER = 0,
	RFM_FAM_IPV4 = 1,
	RFM_FAM_IPV6 = 2,
	RFM_FAM_MAX = 3,
};

#define RFM_DIR_INGRESS 0
#define RFM_DIR_EGRESS 1

// rfm_event.flags
#define RFM_EV_EGRESS 1u    // seen at egress (else ingress)
#define RFM_EV_TRUNCATED 2u // L4 header beyond the extension headers walked
#define RFM_EV_DROPPED 4u   // dropped by the XDP fast path

// Interfaces find their counters through rfm_iface_slots, indexed by
// ifindex modulo RFM_IFACE_TABLE (a power of two): one array load and a
// compare instead of a hash lookup. An interface whose entry another
// interface holds is found in rfm_iface_spill, a hash.
#define RFM_IFACE_TABLE 16384
// Counters come in chunks of RFM_CHUNK_IFACES interfaces; userspace
// creates a chunk when the first of its slots is used, so locked memory
// grows with the interfaces attached.
#define RFM_CHUNK_IFACES 64
#define RFM_MAX_CHUNKS 4096

// Exporter sockets excluded from sampling: one per IPFIX collector (at
// most 8), and during a reload the old and the new one of each.
#define RFM_MAX_EXCLUDE 16
// No sampling at this hook (agent.bpf.directions); its packets are still
// counted. Shifted by the direction: RFM_CFG_UNSAMPLED << dir.
#define RFM_CFG_UNSAMPLED 4u // ingress; 8u egress

// A UDP socket tuple never reported: the IPFIX exporter's own.
struct rfm_exclude {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport; // host order
	__u16 dport; // host order
};

struct rfm_config {
	__u32 sample_rate; // 1-in-N; 0 disables sampling
	__u32 flags;       // RFM_CFG_*
	__u32 n_exclude;   // valid entries of exclude, 0..RFM_MAX_EXCLUDE
	struct rfm_exclude exclude[RFM_MAX_EXCLUDE];
	// Wake the consumer only once this many bytes wait in the ring; it
	// polls on a short timer for the rest. Waking per event costs more
	// than the event itself.
	__u32 wakeup_bytes;
	// Events per ring record, 1..RFM_BATCH (0 means RFM_BATCH).
	__u32 batch_events;
	__u32 pad; // explicit, so the Go mirror needs no hidden padding
	// A partial batch is written out this long after its first event.
	__u64 batch_flush_ns;
};

// Packets count segments as they cross the wire (a GSO/GRO super-packet
// is gso_segs packets) and bytes count every segment's frame: headers
// repeated per segment, a VLAN tag in skb metadata included.
struct rfm_iface_counters {
	__u64 packets[RFM_FAM_MAX];
	__u64 bytes[RFM_FAM_MAX];
};

struct rfm_dp_stats {
	__u64 ring_drops;   // sampled packets (segments of every lost event) lost to a full ring buffer
	__u64 malformed;    // sampled packets with truncated/invalid headers
	__u64 truncated;    // sampled IPv6 packets whose L4 header lies past RFM_MAX_EXT_HDRS
	__u64 timer_errors; // batch timers that failed to init or start (batch written at once)
};

// Per-CPU state of the sampler.
struct rfm_sampler {
	__u32 countdown; // packets until the next sample on this CPU
	__u32 rate;      // rate the countdown was drawn for
};

// One sampled skb, or sampled skbs of one flow merged on one CPU within
// one tick (bpf/rfm.c, rfm_merge: a packet joins one of its CPU's last
// two events of its flow): segs and len are their sums. Layout is decoded by offset in internal/datapath/event.go:
// keep both in sync (64 bytes).
struct rfm_event {
	__u64 boot_ns;
	__u8 src[16]; // IPv4 as ::ffff:a.b.c.d
	__u8 dst[16];
	__u32 ifindex;
	__u32 in_ifindex; // skb->ingress_ifindex: where a forwarded packet came in
	__u32 len;        // L3 bytes (IP header + payload) of all its segments and packets
	__u32 rate;       // the 1-in-N rate that sampled it
	__u16 sport;      // host order; 0 for non-initial fragments
	__u16 dport;
	__u16 segs; // packets on the wire it stands for (>= 1): segments of every skb in it
	__u8 proto;
	__u8 flags; // RFM_EV_*
};

_Static_assert(sizeof(struct rfm_event) == 64, "rfm_event layout");

// Optional header fields (agent.bpf.fields): a load-time constant,
// rfm_fields, selects them. With none selected the programs write
// struct rfm_event as they always did; with any, struct rfm_event_x,
// the event followed by struct rfm_fields, every field not selected
// left zero. Userspace decodes by the layout it loaded (its offsets are
// checked against these structs in internal/datapath) and checks
// version, so a mismatched object cannot be misread.
#define RFM_F_TCP_FLAGS 1u // OR of the TCP flags
#define RFM_F_DSCP 2u      // DSCP (IP TOS / traffic class, ECN bits cleared)
#define RFM_F_TTL 4u       // TTL / hop limit
#define RFM_F_VLAN 8u      // outer and inner VLAN ids
#define RFM_F_FIB 16u      // egress interface and next hop from a FIB lookup (ingress only)
#define RFM_FIELDS_VERSION 1

struct rfm_fields {
	__u8 version;     // RFM_FIELDS_VERSION
	__u8 tcp_flags;   // TCP header byte 13 (CWR..FIN), 0 if not TCP
	__u8 tos;         // DSCP << 2: the TOS / traffic class byte, ECN bits cleared
	__u8 ttl;         // IPv4 TTL or IPv6 hop limit
	__u16 vlan_outer; // VLAN id (12 bits) of the outer tag, 0 if none
	__u16 vlan_inner; // VLAN id of the inner tag (QinQ), 0 if none
	__u32 fib_ifindex; // egress interface bpf_fib_lookup chose, 0 if none
	__u8 fib_flags;    // RFM_FIB_*
	__u8 pad[3];
	__u8 fib_nexthop[16]; // next hop, IPv4 v4-mapped; zero when the destination is on-link
};

// rfm_fields.fib_flags
#define RFM_FIB_NEXTHOP 1u // fib_nexthop holds a gateway

struct rfm_event_x {
	struct rfm_event ev;
	struct rfm_fields f;
};

_Static_assert(sizeof(struct rfm_fields) == 32, "rfm_fields layout");
_Static_assert(sizeof(struct rfm_event_x) == 96, "rfm_event_x layout");
_Static_assert(__builtin_offsetof(struct rfm_event_x, f) == 64, "rfm_event_x layout");
_Static_assert(__builtin_offsetof(struct rfm_fields, vlan_outer) == 4, "rfm_fields layout");
_Static_assert(__builtin_offsetof(struct rfm_fields, fib_ifindex) == 8, "rfm_fields layout");
_Static_assert(__builtin_offsetof(struct rfm_fields, fib_nexthop) == 16, "rfm_fields layout");

// The optional fields the programs report (RFM_F_*), set by userspace
// before loading; 0 keeps the 64-byte event and today's cost.
const volatile __u32 rfm_fields = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rfm_config);
} rfm_config SEC(".maps");

// Where an interface's counters are: its ifindex (0 for a free entry)
// and its slot.
struct rfm_iface_slot {
	__u32 ifindex;
	__u32 slot;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RFM_IFACE_TABLE);
	__type(key, __u32);
	__type(value, struct rfm_iface_slot);
} rfm_iface_slots SEC(".maps");

// ifindex -> slot for interfaces whose rfm_iface_slots entry was taken.
// The hash sits in a one-element map of maps, so userspace can start it
// small and replace it with a bigger copy when it fills: a hash's bucket
// array is allocated for its max_entries up front, and sizing it for the
// interface limit cost 4 MiB of locked memory that nearly never held an
// entry. The extra lookup is paid only on this rare path.
struct rfm_iface_spill_hash {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1); // userspace sizes each one it creates
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct rfm_iface_spill_hash);
} rfm_iface_spill SEC(".maps");

// One chunk of counters: a per-CPU array indexed by
// (slot % RFM_CHUNK_IFACES) * 2 + direction.
struct rfm_counter_chunk {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RFM_CHUNK_IFACES * 2);
	__type(key, __u32);
	__type(value, struct rfm_iface_counters);
};

// Declared only so the chunk's types are in BTF in full (as an inner
// map's value they would be a forward declaration); userspace does not
// create it.
struct rfm_counter_chunk rfm_counter_chunk_spec SEC(".maps");

// Chunk slot / RFM_CHUNK_IFACES of the counters.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, RFM_MAX_CHUNKS);
	__type(key, __u32);
	__array(values, struct rfm_counter_chunk);
} rfm_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rfm_dp_stats);
} rfm_dp_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rfm_sampler);
} rfm_sampler SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 262144); // replaced from agent.bpf.ring_buf_size
} rfm_events SEC(".maps");

// rfm_add_counters adds to the counters of interface ifindex: the TC
// programs for every packet (XDP drops are added in userspace).
// Programs are shared by all interfaces, so the slot is found by
// ifindex: userspace writes the entries before it attaches an interface
// and clears them after it detached it.
static __always_inline void rfm_add_counters(__u32 ifindex, __u32 dir, int fam,
					     __u32 segs, __u32 bytes)
{
	__u32 key = ifindex & (RFM_IFACE_TABLE - 1);
	__u32 slot;
	struct rfm_iface_slot *s = bpf_map_lookup_elem(&rfm_iface_slots, &key);
	if (s && s->ifindex == ifindex) {
		slot = s->slot;
	} else {
		__u32 zero = 0;
		void *spill = bpf_map_lookup_elem(&rfm_iface_spill, &zero);
		if (!spill)
			return;
		__u32 *spilled = bpf_map_lookup_elem(spill, &ifindex);
		if (!spilled)
			return;
		slot = *spilled;
	}
	__u32 chunk = slot / RFM_CHUNK_IFACES;
	void *counters = bpf_map_lookup_elem(&rfm_counters, &chunk);
	if (!counters)
		return;
	__u32 idx = (slot % RFM_CHUNK_IFACES) * 2 + dir;
	struct rfm_iface_counters *c = bpf_map_lookup_elem(counters, &idx);
	if (c) {
		c->packets[fam] += segs;
		c->bytes[fam] += bytes;
	}
}

#endif // RFM_SHARED_H
