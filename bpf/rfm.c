// SPDX-License-Identifier: GPL-2.0-only
//
// rfm datapath: TCX programs that count every packet per interface,
// direction and family, and report 1-in-N sampled IP packets as fixed-size
// events into a BPF ring buffer. All behaviour is driven by maps that
// userspace writes; the programs keep no per-flow state.
//
// Events are collected per CPU and written to the ring in batches: one
// ring record carries up to RFM_BATCH events. A reserve/commit pair on the
// ring costs about as much as the rest of a sampled packet, so paying it
// once per batch instead of once per event is what keeps sample rate 1
// cheap. A per-CPU timer writes out a partial batch after
// cfg->batch_flush_ns, and userspace runs rfm_flush on every CPU at
// shutdown, so no event waits in a batch for long. A sampled packet of
// the same flow as one of the batch's last two events, within the same
// tick, is added to that event instead of taking a slot: a flood of one
// flow becomes an event per flush interval or tick, not one per packet.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define CLOCK_MONOTONIC 1
// bpf_timer_start flag (kernel 6.7): run the callback on this CPU.
#ifndef BPF_F_TIMER_CPU_PIN
#define BPF_F_TIMER_CPU_PIN (1ULL << 1)
#endif

// Debian 12's UAPI headers predate TCX; the values are fixed kernel ABI.
#ifndef TCX_NEXT
#define TCX_NEXT -1
#endif

#define ETH_P_8021Q_BE bpf_htons(0x8100)
#define ETH_P_8021AD_BE bpf_htons(0x88A8)
#define ETH_P_IP_BE bpf_htons(0x0800)
#define ETH_P_IPV6_BE bpf_htons(0x86DD)
#define ETH_P_MPLS_UC_BE bpf_htons(0x8847)
#define ETH_P_MPLS_MC_BE bpf_htons(0x8848)
#define ETH_P_PPP_SES_BE bpf_htons(0x8864)
#define PPP_IPV4_BE bpf_htons(0x0021)
#define PPP_IPV6_BE bpf_htons(0x0057)

#include "rfm_shared.h"

// Passes over the IPv6 header chain: up to RFM_MAX_EXT_HDRS extension
// headers are walked; a packet with more is reported with the last next
// header and no ports, flagged truncated, so padding a packet with
// options cannot hide it.
#define RFM_MAX_EXT_HDRS 8
// MPLS labels walked to the bottom of the stack.
#define RFM_MAX_LABELS 8

// Most events in one ring record.
#define RFM_BATCH 64
// Above the wakeup threshold, each CPU wakes the consumer again after this
// many of its records, in case every producer stepped over the crossing.
#define RFM_REWAKE_RECORDS 16

// One CPU's batch of events not yet in the ring. The elements of the
// batch array are indexed by CPU: bpf_timer cannot live in a per-CPU map.
struct rfm_batch {
	__u32 n;       // events in ev
	__u32 busy;    // a program on this CPU is adding to or writing out the batch
	__u32 armed;   // the flush timer is pending
	__u32 timer_ready;
	__u32 unwoken; // records written above the wakeup threshold since the last wakeup
	__u32 pad;
	struct bpf_timer timer;
	// The time every event added to the batch carries: read when the
	// batch opens and again whenever jiffies moved on since (stamp_jiffies),
	// so an event's time is never later than the packet's and at most
	// min(the batch's age, one tick) earlier. One clock read per batch
	// instead of per event is most of what sample rate 1 costs otherwise.
	__u64 stamp_ns;
	__u64 stamp_jiffies;
	__u8 pad2[8]; // keeps ev, and the next CPU's element, on a cache line of their own
	union {
		struct rfm_event ev[RFM_BATCH];
		struct rfm_event_x evx[RFM_BATCH]; // when rfm_fields is not 0
	};
};

_Static_assert(sizeof(struct rfm_batch) % 64 == 0, "rfm_batch padding");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); // set to the number of possible CPUs by userspace
	__type(key, __u32);
	__type(value, struct rfm_batch);
} rfm_batches SEC(".maps");

// Set for the program pair of links without an L2 header (ARPHRD_NONE
// as on tun, WireGuard and Tailscale, PPP, IP-in-IP and GRE tunnels): the
// packet starts with the IP header. Userspace loads one pair per link
// kind and attaches it to every interface of that kind.
const volatile __u32 rfm_l3_link = 0;

static __always_inline __u32 rfm_gap(__u32 rate)
{
	// Uniform gap in [1, 2*rate-1]: mean rate, one random draw per sample,
	// no division (multiply-shift range reduction).
	__u64 span = rate > 0x7fffffffu ? 0xffffffffull : 2ull * rate - 1;
	return 1 + (__u32)(((__u64)bpf_get_prandom_u32() * span) >> 32);
}

static __always_inline int rfm_should_sample(__u32 rate)
{
	if (rate <= 1)
		return rate == 1;
	__u32 zero = 0;
	struct rfm_sampler *s = bpf_map_lookup_elem(&rfm_sampler, &zero);
	if (!s)
		return 0;
	if (s->rate != rate) {
		s->rate = rate;
		s->countdown = rfm_gap(rate);
	}
	if (--s->countdown != 0)
		return 0;
	s->countdown = rfm_gap(rate);
	return 1;
}

static __always_inline int rfm_excluded_by(const struct rfm_exclude *x,
					   const struct rfm_event *e)
{
	if (e->sport != x->sport || e->dport != x->dport)
		return 0;
	const __u64 *a = (const __u64 *)e->src, *b = (const __u64 *)x->src;
	const __u64 *c = (const __u64 *)e->dst, *d = (const __u64 *)x->dst;
	return a[0] == b[0] && a[1] == b[1] && c[0] == d[0] && c[1] == d[1];
}

static __always_inline int rfm_excluded(const struct rfm_config *cfg,
					const struct rfm_event *e)
{
	__u32 n = cfg->n_exclude;
	if (!n || e->proto != IPPROTO_UDP)
		return 0;
	for (__u32 i = 0; i < RFM_MAX_EXCLUDE; i++) {
		if (i >= n)
			break;
		if (rfm_excluded_by(&cfg->exclude[i], e))
			return 1;
	}
	return 0;
}

static __always_inline int rfm_has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP ||
	       proto == IPPROTO_SCTP || proto == IPPROTO_UDPLITE;
}

// ICMP and ICMPv6 have no ports; their type and code go where NetFlow
// puts them, the destination port (type * 256 + code, source port 0), so
// an echo request, a time-exceeded and a port-unreachable between two
// hosts are three flows and common decoders show the type. The first
// four bytes of the L4 header are read either way (type, code and the
// checksum of ICMP): a shorter ICMP message is malformed.
static __always_inline int rfm_has_l4_key(__u8 proto, __u8 icmp_proto)
{
	return rfm_has_ports(proto) || proto == icmp_proto;
}

// rfm_set_ports fills the event's ports from the first four L4 bytes.
static __always_inline void rfm_set_ports(struct rfm_event *e, const __u8 *p, __u8 icmp_proto)
{
	if (e->proto == icmp_proto) {
		e->sport = 0;
		e->dport = ((__u16)p[0] << 8) | p[1];
		return;
	}
	e->sport = ((__u16)p[0] << 8) | p[1];
	e->dport = ((__u16)p[2] << 8) | p[3];
}

// Headers are copied with bpf_skb_load_bytes, which reads paged data of
// GSO/GRO packets too, and never changes the packet: a monitor must not
// linearise what it watches, so there is no bpf_skb_pull_data.
#define rfm_load bpf_skb_load_bytes

// Offsets below this are read from the linear area directly when the
// bytes are there; it bounds the offset for the verifier.
#define RFM_DIRECT_MAX 256

// rfm_copy_words copies n bytes (a constant, a multiple of 4) from the
// packet to buf, 8-byte aligned on the stack, a word at a time. The
// packet's alignment is unknown to the compiler, so __builtin_memcpy
// would load and store every byte on its own; the loads may be
// unaligned, which the verifier allows for packet data where the CPU
// handles it (x86-64, arm64).
static __always_inline void rfm_copy_words(void *buf, const void *pkt, const __u32 n)
{
	__u32 i = 0;
#pragma unroll
	for (; i + 8 <= n; i += 8)
		*(__u64 *)(buf + i) = *(const __u64 *)(pkt + i);
	if (i + 4 <= n)
		*(__u32 *)(buf + i) = *(const __u32 *)(pkt + i);
}

// rfm_copy copies n bytes (a constant, a multiple of 4) at off into buf
// (8-byte aligned): straight from the linear area when they lie in it,
// as the headers nearly always do at TC, else with rfm_load (paged data
// of GRO packets). A plain copy instead of a helper call is most of what
// parsing a sampled packet costs; neither way changes the packet.
// Returns 0 on success.
static __always_inline int rfm_copy(struct __sk_buff *skb, __u32 off, void *buf, const __u32 n)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (off < RFM_DIRECT_MAX && data + off + n <= data_end) {
		rfm_copy_words(buf, data + off, n);
		return 0;
	}
	return rfm_load(skb, off, buf, n);
}

// Bytes of link header copied for the uncommon link layers (VLAN tags,
// MPLS labels, PPPoE): room for two tags and RFM_MAX_LABELS labels.
#define RFM_L2_WINDOW 64

static __always_inline int rfm_ip_family(__u8 first)
{
	first >>= 4;
	return first == 4 ? RFM_FAM_IPV4 : first == 6 ? RFM_FAM_IPV6 : RFM_FAM_OTHER;
}

// rfm_classify_l2 walks what follows the Ethernet addresses when the
// ethertype is not IP: up to two VLAN tags in the data (an outer tag the
// kernel moved into skb metadata is not in the data), then IP, a PPPoE
// session header, or an MPLS label stack to its bottom (IPv4/IPv6 by the
// first nibble under it). The header is copied to the stack once, so the
// walk is plain loads.
static __noinline int rfm_classify_l2(struct __sk_buff *skb, __u32 *l3)
{
	__u8 h[RFM_L2_WINDOW] __attribute__((aligned(8)));
	__u32 n = skb->len < RFM_L2_WINDOW ? skb->len : RFM_L2_WINDOW;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	// Straight from the linear area when the whole window is there (a
	// word at a time, as rfm_copy), else the helper for what there is.
	if (n < ETH_HLEN)
		return RFM_FAM_OTHER;
	if (data + RFM_L2_WINDOW <= data_end)
		rfm_copy_words(h, data, RFM_L2_WINDOW);
	else if (rfm_load(skb, 0, h, n))
		return RFM_FAM_OTHER;
	__be16 proto = *(__be16 *)(h + 12);
	__u32 off = ETH_HLEN;
	for (int i = 0; i < 2; i++) {
		if (proto != ETH_P_8021Q_BE && proto != ETH_P_8021AD_BE)
			break;
		if (off + 4 > n)
			return RFM_FAM_OTHER;
		proto = *(__be16 *)(h + (off & 31) + 2);
		off += 4;
	}
	*l3 = off;
	if (proto == ETH_P_IP_BE)
		return RFM_FAM_IPV4;
	if (proto == ETH_P_IPV6_BE)
		return RFM_FAM_IPV6;
	if (proto == ETH_P_PPP_SES_BE) {
		// 6-byte PPPoE session header, then the 2-byte PPP protocol.
		if (off + 8 > n)
			return RFM_FAM_OTHER;
		proto = *(__be16 *)(h + (off & 31) + 6);
		*l3 = off + 8;
		return proto == PPP_IPV4_BE ? RFM_FAM_IPV4 : proto == PPP_IPV6_BE ? RFM_FAM_IPV6 : RFM_FAM_OTHER;
	}
	if (proto != ETH_P_MPLS_UC_BE && proto != ETH_P_MPLS_MC_BE)
		return RFM_FAM_OTHER;
	for (int i = 0; i < RFM_MAX_LABELS; i++) {
		if (off + 5 > n)
			return RFM_FAM_OTHER;
		__u8 bos = h[(off + 2) & (RFM_L2_WINDOW - 1)] & 1;
		off += 4;
		if (bos) {
			*l3 = off;
			return rfm_ip_family(h[off & (RFM_L2_WINDOW - 1)]);
		}
	}
	return RFM_FAM_OTHER; // deeper stack than we walk
}

// rfm_classify returns the packet's family and sets *l3 to the offset of
// its IP header. Plain Ethernet and bare-IP links, nearly all traffic,
// are read in place from the linear area (always there at TC).
static __always_inline int rfm_classify(struct __sk_buff *skb, __u32 *l3)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (rfm_l3_link) {
		*l3 = 0;
		__u8 b;
		if (data + 1 <= data_end)
			b = *(__u8 *)data;
		else if (rfm_load(skb, 0, &b, 1))
			return RFM_FAM_OTHER;
		return rfm_ip_family(b);
	}
	*l3 = ETH_HLEN;
	if (data + ETH_HLEN <= data_end) {
		__be16 proto = ((struct ethhdr *)data)->h_proto;
		if (proto == ETH_P_IP_BE)
			return RFM_FAM_IPV4;
		if (proto == ETH_P_IPV6_BE)
			return RFM_FAM_IPV6;
	}
	return rfm_classify_l2(skb, l3);
}

// What rfm_parse learns besides the event's fields.
struct rfm_hdrs {
	__u32 ip_len;  // IP total length of this skb (header + payload)
	__u32 hdr_len; // bytes from the start of the data to the first payload byte; 0 if unknown
	__u32 l4;      // offset of the transport header whose ports were read; 0 if none
};

// rfm_l4_hdr_len sets h->hdr_len for a GSO packet: where its segments'
// payload starts, the headers each segment repeats on the wire.
static __always_inline void rfm_l4_hdr_len(struct __sk_buff *skb, __u32 l4, __u8 proto,
					   struct rfm_hdrs *h)
{
	if (proto == IPPROTO_UDP) {
		h->hdr_len = l4 + 8;
	} else if (proto == IPPROTO_TCP) {
		__u8 doff;
		if (rfm_load(skb, l4 + 12, &doff, 1) == 0 && (doff >> 4) >= 5)
			h->hdr_len = l4 + (doff >> 4) * 4;
	}
}

// Parses IPv4 at l3 into e. Returns 0 when e holds a valid flow.
static __always_inline int rfm_parse_ipv4(struct __sk_buff *skb, __u32 l3, int gso,
					  struct rfm_event *e, struct rfm_hdrs *h)
{
	// One copy for the usual header and the ports behind it; a packet
	// too short for that is copied again without them.
	__u8 ip[24] __attribute__((aligned(8)));
	int with_ports = rfm_copy(skb, l3, ip, 24) == 0;
	if (!with_ports && rfm_load(skb, l3, ip, 20))
		return -1;
	__u32 ihl = (ip[0] & 0x0f) * 4;
	if ((ip[0] >> 4) != 4 || ihl < 20)
		return -1;
	__u32 tot_len = ((__u32)ip[2] << 8) | ip[3];
	__u32 avail = skb->len - l3;
	if (tot_len == 0) // BIG TCP and some GSO paths leave it zero
		tot_len = avail;
	if (tot_len < ihl || tot_len > avail)
		return -1;

	__u64 *src = (__u64 *)e->src, *dst = (__u64 *)e->dst;
	src[0] = 0;
	dst[0] = 0;
	((__u32 *)e->src)[2] = bpf_htonl(0x0000ffff);
	((__u32 *)e->dst)[2] = bpf_htonl(0x0000ffff);
	// Word stores: a byte-wise copy would store every byte on its own.
	((__u32 *)e->src)[3] = *(const __u32 *)(ip + 12);
	((__u32 *)e->dst)[3] = *(const __u32 *)(ip + 16);
	e->proto = ip[9];
	e->sport = 0;
	e->dport = 0;
	h->ip_len = tot_len;

	__u16 frag = ((__u16)ip[6] << 8 | ip[7]) & 0x1fff;
	if (frag != 0 || !rfm_has_l4_key(e->proto, IPPROTO_ICMP))
		return 0; // later fragments carry no transport header

	// Ports must lie inside the IP packet, not in Ethernet padding.
	if (ihl + 4 > tot_len)
		return -1;
	__u32 l4 = l3 + ihl;
	__u8 *p = ip + 20;
	if (ihl != 20 || !with_ports) {
		if (rfm_load(skb, l4, ip + 20, 4))
			return -1;
	}
	rfm_set_ports(e, p, IPPROTO_ICMP);
	h->l4 = l4;
	if (gso)
		rfm_l4_hdr_len(skb, l4, e->proto, h);
	return 0;
}

// Parses IPv6 at l3, walking extension headers to the real L4 protocol.
static __always_inline int rfm_parse_ipv6(struct __sk_buff *skb, __u32 l3, int gso,
					  struct rfm_event *e, struct rfm_hdrs *h)
{
	// The header and, without extension headers, the ports.
	__u8 ip[44] __attribute__((aligned(8)));
	int with_ports = rfm_copy(skb, l3, ip, 44) == 0;
	if (!with_ports && rfm_load(skb, l3, ip, 40))
		return -1;
	if ((ip[0] >> 4) != 6)
		return -1;
	__u32 len = (((__u32)ip[4] << 8) | ip[5]) + 40;
	__u32 avail = skb->len - l3;
	if (len == 40 && avail > 40) // jumbogram / BIG TCP: payload length 0
		len = avail;
	if (len > avail)
		return -1;
	// Word stores, as for IPv4.
	((__u64 *)e->src)[0] = *(const __u64 *)(ip + 8);
	((__u64 *)e->src)[1] = *(const __u64 *)(ip + 16);
	((__u64 *)e->dst)[0] = *(const __u64 *)(ip + 24);
	((__u64 *)e->dst)[1] = *(const __u64 *)(ip + 32);
	e->sport = 0;
	e->dport = 0;
	h->ip_len = len;

	__u8 next = ip[6];
	__u32 off = 40; // from l3
	// Headers must lie inside the IP packet, not in Ethernet padding.
	for (int i = 0; i <= RFM_MAX_EXT_HDRS; i++) {
		__u8 x[4];
		switch (next) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
		case IPPROTO_AH:
		case IPPROTO_FRAGMENT:
			if (i == RFM_MAX_EXT_HDRS) {
				// More headers than we walk: still a flow, without ports.
				e->proto = next;
				e->flags |= RFM_EV_TRUNCATED;
				return 0;
			}
			if (off + 8 > len || rfm_load(skb, l3 + off, x, 4))
				return -1;
			if (next == IPPROTO_FRAGMENT) {
				next = x[0];
				off += 8;
				if ((((__u16)x[2] << 8) | x[3]) & 0xfff8) {
					e->proto = next; // non-initial fragment: no ports
					return 0;
				}
			} else if (next == IPPROTO_AH) {
				next = x[0];
				off += ((__u32)x[1] + 2) * 4;
			} else {
				next = x[0];
				off += ((__u32)x[1] + 1) * 8;
			}
			continue;
		}
		break;
	}
	e->proto = next;
	if (!rfm_has_l4_key(next, IPPROTO_ICMPV6))
		return 0;
	__u8 *p = ip + 40;
	if (off + 4 > len)
		return -1;
	if ((off != 40 || !with_ports) && rfm_load(skb, l3 + off, p, 4))
		return -1;
	rfm_set_ports(e, p, IPPROTO_ICMPV6);
	h->l4 = l3 + off;
	if (gso)
		rfm_l4_hdr_len(skb, l3 + off, next, h);
	return 0;
}

// rfm_claim marks b busy; rfm_release clears it. The barriers keep the
// compiler from moving batch accesses across them. busy is not atomic:
// only programs of b's own CPU touch b, and they can interleave only by
// interrupting one another (a softirq during BPF_PROG_TEST_RUN or during
// rfm_flush, preemption on PREEMPT_RT), never halfway through a store.
static __always_inline void rfm_claim(struct rfm_batch *b)
{
	b->busy = 1;
	asm volatile("" ::: "memory");
}

static __always_inline void rfm_release(struct rfm_batch *b)
{
	asm volatile("" ::: "memory");
	b->busy = 0;
}

// rfm_batch_packets is how many sampled packets the first n events of b
// stand for: an event counts its segments, and a run of one flow's
// packets merged into it (rfm_merge) counts them all. Only a lost batch
// needs it.
static __always_inline __u64 rfm_batch_packets(const struct rfm_batch *b, __u32 n)
{
	__u64 packets = 0;
	for (__u32 k = 0; k < RFM_BATCH; k++) {
		if (k >= n)
			break;
		packets += rfm_fields ? b->evx[k].ev.segs : b->ev[k].segs;
	}
	return packets;
}

// rfm_flush_batch writes b's events to the ring as one record; the caller
// has set b->busy, so a program that interrupts the copy on this CPU
// leaves the batch alone. The
// consumer is woken when this record makes the backlog cross
// wakeup_bytes, not for every record above it: a consumer that is behind
// is already awake, and a forced wakeup costs an interrupt (a VM exit
// under virtualisation). Producers on other CPUs may step over the
// crossing together, so above it each CPU still wakes the consumer every
// RFM_REWAKE_RECORDS records.
static __always_inline void rfm_flush_batch(struct rfm_batch *b)
{
	__u32 n = b->n;
	b->n = 0;
	if (n == 0 || n > RFM_BATCH)
		return;
	__u32 zero = 0;
	struct rfm_config *cfg = bpf_map_lookup_elem(&rfm_config, &zero);
	struct rfm_dp_stats *st = bpf_map_lookup_elem(&rfm_dp_stats, &zero);
	if (!cfg || !st)
		return;
	__u64 size = n * (rfm_fields ? sizeof(struct rfm_event_x) : sizeof(struct rfm_event));
	__u64 flags = BPF_RB_NO_WAKEUP;
	__u64 avail = bpf_ringbuf_query(&rfm_events, BPF_RB_AVAIL_DATA);
	if (avail + size + 8 >= cfg->wakeup_bytes) {
		if (avail < cfg->wakeup_bytes || ++b->unwoken >= RFM_REWAKE_RECORDS) {
			flags = BPF_RB_FORCE_WAKEUP;
			b->unwoken = 0;
		}
	}
	if (bpf_ringbuf_output(&rfm_events, b->ev, size, flags))
		st->ring_drops += rfm_batch_packets(b, n);
}

// A partial batch is due: write it out, unless the timer interrupted a
// program of this CPU in the middle of the batch; then try again shortly.
static int rfm_batch_timer(void *map, __u32 *key, struct rfm_batch *b)
{
	if (b->busy) {
		bpf_timer_start(&b->timer, 100000, BPF_F_TIMER_CPU_PIN);
		return 0;
	}
	rfm_claim(b);
	rfm_flush_batch(b);
	b->armed = 0;
	rfm_release(b);
	return 0;
}

// rfm_batch_slot claims this CPU's batch and returns where its next
// event goes, so the event is built in place rather than copied there.
// It returns NULL, leaving *bp NULL, when another program of this CPU is
// in the middle of the batch: the caller then builds the event on its
// stack and rfm_send_alone writes it to the ring on its own.
static __always_inline struct rfm_event_x *rfm_batch_slot(struct rfm_batch **bp)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct rfm_batch *b = bpf_map_lookup_elem(&rfm_batches, &cpu);
	if (!b || b->busy)
		return NULL;
	rfm_claim(b);
	*bp = b;
	__u32 i = b->n;
	if (i >= RFM_BATCH) // never true; bounds the index for the verifier
		i = 0;
	if (rfm_fields)
		return &b->evx[i];
	return (struct rfm_event_x *)&b->ev[i];
}

// rfm_merge adds event e to event j of b when event j carries the
// batch's current stamp and both are the same flow sampled at the same
// rate (every field but the time, segments and bytes equal; with
// optional fields, all of them equal but the TCP flags, which are ORed)
// and the sums fit their fields. The consumer adds
// an event's segments and bytes, times its rate, to its flow, so a run
// of one flow's packets in one event is counted exactly as the packets
// one by one. Returns 1 if e was merged.
static __always_inline int rfm_merge(struct rfm_batch *b, __u32 j, const struct rfm_event *e)
{
	// j < RFM_BATCH already; the mask bounds it for the verifier, and
	// the barrier keeps the compiler from dropping the mask as redundant.
	asm volatile("" : "+r"(j));
	j &= RFM_BATCH - 1;
	struct rfm_event *p = rfm_fields ? &b->evx[j].ev : &b->ev[j];
	if (p->boot_ns != b->stamp_ns)
		return 0; // stamped before the tick moved on
	const __u64 *a = (const __u64 *)p, *c = (const __u64 *)e;
	// Word 7: ports, segments (bits 32-47, summed), protocol, flags;
	// most flows of one host pair differ here, so it is compared first.
	if ((a[7] ^ c[7]) & ~(0xffffull << 32))
		return 0;
	// Words 1-4 the addresses, 5 the two ifindexes; in word 6 only the
	// rate (bits 32-63) is key, the length is summed.
	if (a[1] != c[1] || a[2] != c[2] || a[3] != c[3] || a[4] != c[4] || a[5] != c[5] ||
	    (a[6] ^ c[6]) >> 32)
		return 0;
	__u32 segs = (__u32)p->segs + e->segs;
	__u64 len = (__u64)p->len + e->len;
	if (segs > 0xffff || len > 0xffffffffull)
		return 0;
	if (rfm_fields) {
		const __u64 *fa = (const __u64 *)&b->evx[j].f;
		const __u64 *fc = (const __u64 *)&((const struct rfm_event_x *)e)->f;
		// Byte 1 of the first word is tcp_flags.
		if ((fa[0] ^ fc[0]) & ~0xff00ull || fa[1] != fc[1] || fa[2] != fc[2] || fa[3] != fc[3])
			return 0;
		b->evx[j].f.tcp_flags |= ((const struct rfm_event_x *)e)->f.tcp_flags;
	}
	p->segs = segs;
	p->len = len;
	return 1;
}

// rfm_batch_commit adds the event rfm_batch_slot handed out to the batch,
// writes the batch to the ring when it is full or arms its flush timer,
// and releases the batch.
static __always_inline void rfm_batch_commit(struct rfm_batch *b, struct rfm_event *e,
					     const struct rfm_config *cfg,
					     struct rfm_dp_stats *st)
{
	__u32 i = b->n;
	if (i >= RFM_BATCH) // as in rfm_batch_slot
		i = 0;
	__u64 jiffies = bpf_jiffies64();
	if (i > 0 && jiffies == b->stamp_jiffies) {
		// The stamp is still current: a packet of the flow of one of
		// the last two events joins it and takes no slot. Two, because
		// a forwarded packet's ingress and egress events alternate in
		// the batch of the CPU that forwards it.
		if (rfm_merge(b, i - 1, e) || (i > 1 && rfm_merge(b, i - 2, e))) {
			rfm_release(b);
			return;
		}
	} else {
		b->stamp_ns = bpf_ktime_get_boot_ns();
		b->stamp_jiffies = jiffies;
	}
	e->boot_ns = b->stamp_ns;
	b->n = ++i;
	__u32 limit = cfg->batch_events;
	if (limit == 0 || limit > RFM_BATCH)
		limit = RFM_BATCH;
	if (i >= limit)
		rfm_flush_batch(b);
	else if (!b->armed) {
		if (!b->timer_ready) {
			// -EBUSY: initialised before (by an earlier map user).
			long r = bpf_timer_init(&b->timer, &rfm_batches, CLOCK_MONOTONIC);
			if (r == 0 || r == -16)
				r = bpf_timer_set_callback(&b->timer, rfm_batch_timer);
			if (r == 0)
				b->timer_ready = 1;
		}
		if (b->timer_ready &&
		    bpf_timer_start(&b->timer, cfg->batch_flush_ns, BPF_F_TIMER_CPU_PIN) == 0) {
			b->armed = 1;
		} else {
			// Without a timer nothing would write a partial batch out.
			st->timer_errors++;
			rfm_flush_batch(b);
		}
	}
	rfm_release(b);
}

// rfm_send_alone writes one event built on the stack to the ring.
static __always_inline void rfm_send_alone(struct rfm_event_x *x, struct rfm_dp_stats *st)
{
	x->ev.boot_ns = bpf_ktime_get_boot_ns();
	if (bpf_ringbuf_output(&rfm_events, x, rfm_fields ? sizeof(*x) : sizeof(x->ev),
			       BPF_RB_NO_WAKEUP))
		st->ring_drops += x->ev.segs;
}

// rfm_segments_of is how many packets a GSO packet of len bytes becomes
// on the wire: its gso_segs, or for an untrusted packet (tap/virtio with
// a vnet header, gso_segs 0) its payload behind hdr_len bytes of headers
// divided into gso_size pieces. A payload that fits one piece needs no
// division.
static __always_inline __u32 rfm_segments_of(__u32 len, __u32 gso_segs, __u32 mss, __u32 hdr_len)
{
	if (gso_segs)
		return gso_segs;
	if (!hdr_len || len <= hdr_len || !mss)
		return 1;
	__u32 payload = len - hdr_len;
	if (payload <= mss)
		return 1;
	return (payload + mss - 1) / mss;
}

// rfm_segments reads the skb's fields again rather than taking those
// rfm_handle read before the parse: values kept live across the header
// walks take the programs with optional fields past the verifier's
// 1M-instruction budget.
static __always_inline __u32 rfm_segments(struct __sk_buff *skb, __u32 hdr_len)
{
	return rfm_segments_of(skb->len, skb->gso_segs, skb->gso_size, hdr_len);
}

// rfm_gso_hdr_len is the common case of rfm_parse's hdr_len for an
// unsampled GSO packet, read in place from the linear area: TCP or UDP
// right behind an IPv4 header without options or an IPv6 header without
// extension headers. Only the three bytes needed are loaded (a copy to
// the stack is a load and a store per byte: the packet's alignment is
// unknown). Returns 0 for anything else, which takes the full parse.
static __always_inline __u32 rfm_gso_hdr_len(struct __sk_buff *skb, __u32 l3, int fam)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (l3 >= RFM_DIRECT_MAX)
		return 0;
	const __u8 *b = data + l3;
	if (fam == RFM_FAM_IPV4) {
		if ((void *)(b + 40) > data_end || b[0] != 0x45)
			return 0;
		if (b[9] == IPPROTO_UDP)
			return l3 + 20 + 8;
		if (b[9] == IPPROTO_TCP && (b[32] >> 4) >= 5)
			return l3 + 20 + (b[32] >> 4) * 4;
		return 0;
	}
	if ((void *)(b + 56) > data_end || (b[0] >> 4) != 6)
		return 0;
	if (b[6] == IPPROTO_UDP)
		return l3 + 40 + 8;
	if (b[6] == IPPROTO_TCP && (b[52] >> 4) >= 5)
		return l3 + 40 + (b[52] >> 4) * 4;
	return 0;
}

#define RFM_AF_INET 2
#define RFM_AF_INET6 10

// rfm_fib sets f's egress interface and next hop from a FIB lookup of
// the event's destination as the kernel would route it from the
// interface the packet came in on (its VRF's table and the FIB rules
// that match on addresses, ports, protocol and TOS). The neighbour table
// is not consulted and the lookup does not depend on the packet's size.
static __always_inline void rfm_fib(struct __sk_buff *skb, const struct rfm_event *e,
				    __u32 fam, __u8 tos, struct rfm_fields *f)
{
	struct bpf_fib_lookup fib = {};
	fib.l4_protocol = e->proto;
	fib.sport = bpf_htons(e->sport);
	fib.dport = bpf_htons(e->dport);
	fib.ifindex = skb->ingress_ifindex;
	if (fam == RFM_FAM_IPV4) {
		fib.family = RFM_AF_INET;
		fib.tos = tos;
		__builtin_memcpy(&fib.ipv4_src, e->src + 12, 4);
		__builtin_memcpy(&fib.ipv4_dst, e->dst + 12, 4);
	} else {
		fib.family = RFM_AF_INET6;
		__builtin_memcpy(fib.ipv6_src, e->src, 16);
		__builtin_memcpy(fib.ipv6_dst, e->dst, 16);
	}
	if (bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH) != BPF_FIB_LKUP_RET_SUCCESS)
		return;
	f->fib_ifindex = fib.ifindex;
	// The lookup leaves the destination in place for an on-link route
	// and writes the gateway there otherwise.
	const __u32 *dst = (const __u32 *)e->dst;
	if (fam == RFM_FAM_IPV4) {
		if (fib.ipv4_dst == dst[3])
			return;
		((__u32 *)f->fib_nexthop)[2] = bpf_htonl(0x0000ffff);
		((__u32 *)f->fib_nexthop)[3] = fib.ipv4_dst;
	} else {
		if (fib.ipv6_dst[0] == dst[0] && fib.ipv6_dst[1] == dst[1] &&
		    fib.ipv6_dst[2] == dst[2] && fib.ipv6_dst[3] == dst[3])
			return;
		__builtin_memcpy(f->fib_nexthop, fib.ipv6_dst, 16);
	}
	f->fib_flags = RFM_FIB_NEXTHOP;
}

// rfm_read_fields fills x->f with the optional fields rfm_fields selects,
// once the parse has found the headers: a second small copy of the IP
// header, one byte of TCP, the link header's tags. It is a subprogram
// of its own, outside the header walks, so it adds to the verifier's
// work once instead of once per path through them. l4 is the transport
// header's offset (0: none, e.g. a later fragment, or a TCP header cut
// short before its flags).
static __noinline void rfm_read_fields(struct __sk_buff *skb, __u32 l3, __u32 l4, __u32 fam_dir,
				       struct rfm_event_x *x)
{
	const struct rfm_event *e = &x->ev;
	struct rfm_fields *f = &x->f;
	__u32 fam = fam_dir & 0xff, dir = fam_dir >> 8;
	__builtin_memset(f, 0, sizeof(*f));
	f->version = RFM_FIELDS_VERSION;
	__u8 tos = 0; // the FIB lookup takes it whether or not DSCP is reported
	if (rfm_fields & (RFM_F_DSCP | RFM_F_TTL | RFM_F_FIB)) {
		// The parse has read at least the fixed IP header.
		__u8 ip[9];
		if (rfm_load(skb, l3, ip, 9) == 0) {
			// IPv6: the traffic class straddles the first two bytes.
			tos = (fam == RFM_FAM_IPV4 ? ip[1] : (ip[0] << 4) | (ip[1] >> 4)) & 0xfc;
			if (rfm_fields & RFM_F_DSCP)
				f->tos = tos;
			if (rfm_fields & RFM_F_TTL)
				f->ttl = fam == RFM_FAM_IPV4 ? ip[8] : ip[7];
		}
	}
	if ((rfm_fields & RFM_F_TCP_FLAGS) && l4 && e->proto == IPPROTO_TCP) {
		__u8 fl;
		if (rfm_load(skb, l4 + 13, &fl, 1) == 0)
			f->tcp_flags = fl;
	}
	if ((rfm_fields & RFM_F_VLAN) && !rfm_l3_link) {
		// Tags in the data: up to two behind the MAC addresses. An outer
		// tag the kernel moved into skb metadata comes first.
		__u8 t[8];
		int meta = skb->vlan_present;
		if (meta)
			f->vlan_outer = skb->vlan_tci & 0x0fff;
		__be16 et = 0;
		if (rfm_load(skb, 12, t, 8) == 0)
			et = *(__be16 *)t;
		if (et == ETH_P_8021Q_BE || et == ETH_P_8021AD_BE) {
			__u16 id = (((__u16)t[2] << 8) | t[3]) & 0x0fff;
			if (meta) {
				f->vlan_inner = id;
			} else {
				f->vlan_outer = id;
				et = *(__be16 *)(t + 4);
				if (et == ETH_P_8021Q_BE || et == ETH_P_8021AD_BE)
					f->vlan_inner = (((__u16)t[6] << 8) | t[7]) & 0x0fff;
			}
		}
	}
	if ((rfm_fields & RFM_F_FIB) && dir == RFM_DIR_INGRESS)
		rfm_fib(skb, e, fam, tos, f);
}

static __always_inline int rfm_handle(struct __sk_buff *skb, __u32 dir)
{
	__u32 l3 = 0;
	int fam = rfm_classify(skb, &l3);
	// A tag the kernel moved into metadata still crosses the wire with
	// every segment.
	__u32 tag = skb->vlan_present ? 4 : 0;
	__u32 gso_size = skb->gso_size;
	int gso = gso_size != 0;
	__u32 zero = 0;
	struct rfm_config *cfg = NULL;
	__u32 rate = 0;
	int sample = 0;
	if (fam != RFM_FAM_OTHER) {
		cfg = bpf_map_lookup_elem(&rfm_config, &zero);
		if (cfg) {
			rate = cfg->sample_rate; // read once: the event carries this rate
			if (!(cfg->flags & (RFM_CFG_UNSAMPLED << dir)))
				sample = rfm_should_sample(rate);
		}
	}
	if (!gso && !sample) {
		rfm_add_counters(skb->ifindex, dir, fam, 1, skb->len + tag);
		return TCX_NEXT;
	}
	// The stack's own GSO packets at egress: the kernel has counted the
	// segments and worked out their wire length already, nothing to parse.
	__u32 kernel_segs = skb->gso_segs;
	if (gso && !sample && dir == RFM_DIR_EGRESS && kernel_segs && skb->wire_len > skb->len) {
		rfm_add_counters(skb->ifindex, dir, fam, kernel_segs, skb->wire_len + kernel_segs * tag);
		return TCX_NEXT;
	}
	if (gso && !sample && fam != RFM_FAM_OTHER) {
		__u32 hdr = rfm_gso_hdr_len(skb, l3, fam);
		if (hdr) {
			__u32 len = skb->len;
			__u32 segs = rfm_segments_of(len, kernel_segs, gso_size, hdr);
			__u32 wire = dir == RFM_DIR_EGRESS && skb->wire_len > len
					     ? skb->wire_len
					     : len + (segs - 1) * hdr;
			rfm_add_counters(skb->ifindex, dir, fam, segs, wire + segs * tag);
			return TCX_NEXT;
		}
	}

	// A sampled event is built in its CPU's batch (claimed here, so
	// every path below releases it); an unsampled GSO packet is parsed
	// on the stack for its header length only. With optional fields the
	// event is built on the stack and copied: verifying the field reads
	// against both places would exceed the verifier's budget.
	struct rfm_event_x stack_x;
	struct rfm_event_x *x = &stack_x;
	struct rfm_batch *b = NULL;
	if (sample && cfg && !rfm_fields) {
		struct rfm_event_x *slot = rfm_batch_slot(&b);
		if (slot)
			x = slot;
	}
	struct rfm_event *e = &x->ev;
	struct rfm_hdrs h = {};
	e->flags = dir == RFM_DIR_EGRESS ? RFM_EV_EGRESS : 0;
	int err = -1;
	if (fam == RFM_FAM_IPV4)
		err = rfm_parse_ipv4(skb, l3, gso, e, &h);
	else if (fam == RFM_FAM_IPV6)
		err = rfm_parse_ipv6(skb, l3, gso, e, &h);

	// Wire bytes of all segments from the start of the data: the kernel
	// works them out for the qdisc at egress (wire_len, which also knows
	// tunnel inner headers); at ingress each segment repeats the headers
	// up to the payload.
	__u32 segs = 1, wire = skb->len;
	if (gso) {
		segs = rfm_segments(skb, h.hdr_len);
		if (dir == RFM_DIR_EGRESS && skb->wire_len > skb->len)
			wire = skb->wire_len;
		else if (h.hdr_len)
			wire = skb->len + (segs - 1) * h.hdr_len;
	}
	rfm_add_counters(skb->ifindex, dir, fam, segs, wire + segs * tag);
	if (!sample || !cfg)
		return TCX_NEXT;

	struct rfm_dp_stats *st = bpf_map_lookup_elem(&rfm_dp_stats, &zero);
	if (!st || err || rfm_excluded(cfg, e)) {
		if (st && err)
			st->malformed++;
		if (b)
			rfm_release(b);
		return TCX_NEXT;
	}
	if (e->flags & RFM_EV_TRUNCATED)
		st->truncated++;
	// L3 bytes: the IP packet, or for a GSO packet every segment's.
	e->len = gso ? wire - segs * l3 : h.ip_len;
	e->segs = segs > 0xffff ? 0xffff : segs;
	e->rate = rate;
	e->ifindex = skb->ifindex;
	e->in_ifindex = skb->ingress_ifindex;
	if (rfm_fields) {
		// The TCP flags byte must lie inside the IP packet, not in padding.
		__u32 l4 = h.l4 && h.l4 + 14 <= l3 + h.ip_len ? h.l4 : 0;
		rfm_read_fields(skb, l3, l4, fam | dir << 8, x);
	}
	if (b) {
		rfm_batch_commit(b, e, cfg, st);
		return TCX_NEXT;
	}
	struct rfm_event_x *slot = rfm_fields ? rfm_batch_slot(&b) : NULL;
	if (slot && b) {
		*slot = *x;
		rfm_batch_commit(b, &slot->ev, cfg, st);
	} else {
		rfm_send_alone(x, st);
	}
	return TCX_NEXT;
}

SEC("tcx/ingress")
int rfm_ingress(struct __sk_buff *skb)
{
	return rfm_handle(skb, RFM_DIR_INGRESS);
}

SEC("tcx/egress")
int rfm_egress(struct __sk_buff *skb)
{
	return rfm_handle(skb, RFM_DIR_EGRESS);
}

// rfm_flush writes this CPU's batch to the ring now. Userspace runs it on
// every CPU (BPF_PROG_TEST_RUN on a thread pinned to the CPU) once the
// interfaces are detached, so shutdown need not wait for the timers.
// Returns 1 if a program of this CPU was in the middle of the batch.
SEC("tc")
int rfm_flush(struct __sk_buff *skb)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct rfm_batch *b = bpf_map_lookup_elem(&rfm_batches, &cpu);
	if (!b)
		return 0;
	if (b->busy)
		return 1;
	rfm_claim(b);
	rfm_flush_batch(b);
	rfm_release(b);
	return 0;
}

struct rfm_probe_timer {
	struct bpf_timer timer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rfm_probe_timer);
} rfm_probe_timers SEC(".maps");

static int rfm_probe_timer_cb(void *map, __u32 *key, struct rfm_probe_timer *t)
{
	return 0;
}

// rfm_probe_timer_pin returns 0 when bpf_timer_start takes
// BPF_F_TIMER_CPU_PIN (Linux 6.7), which the batch timers need; userspace
// runs it once at load to name a missing feature instead of failing later.
SEC("tc")
int rfm_probe_timer_pin(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct rfm_probe_timer *t = bpf_map_lookup_elem(&rfm_probe_timers, &zero);
	if (!t)
		return 1;
	long r = bpf_timer_init(&t->timer, &rfm_probe_timers, CLOCK_MONOTONIC);
	if (r && r != -16)
		return 2;
	if (bpf_timer_set_callback(&t->timer, rfm_probe_timer_cb))
		return 3;
	if (bpf_timer_start(&t->timer, 1000000000ull, BPF_F_TIMER_CPU_PIN))
		return 4;
	bpf_timer_cancel(&t->timer);
	return 0;
}

// The cost floor for benchmarks: what any TCX program costs to run.
SEC("tcx/ingress")
int rfm_floor(struct __sk_buff *skb)
{
	return TCX_NEXT;
}

char LICENSE[] SEC("license") = "GPL";
