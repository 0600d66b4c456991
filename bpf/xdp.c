// SPDX-License-Identifier: GPL-2.0-only
//
// rfm XDP fast path: a stateless firewall in front of the stack. Every
// IP packet is looked up in a blocklist (source or destination prefix),
// optionally a blackhole list (destination prefix, from BGP), then in an
// ordered rule set where the first match wins. A packet nothing matches
// passes untouched.
//
// Rules are classified with bitmasks, not walked one by one: each rule
// is a bit, and per-field tables (source prefixes, destination prefixes,
// protocol, source port, destination port) give the set of rules that
// field allows. The lowest bit of their intersection is the first
// matching rule. That keeps the cost flat in the number of rules.
//
// Rule tables exist twice (generation 0 and 1). Userspace fills the
// generation not in use, then flips xdp_cfg.gen with one 4-byte store;
// a packet reads gen once, so it sees one whole rule set.
//
// A packet this program drops never reaches the TC programs of
// bpf/rfm.c. It is counted here in its rule's row by family, which
// userspace adds into the interface rx counters when it reads them
// (internal/datapath's IngressSource): one counter update per drop
// instead of two. It is sampled with the TC sampler into their ring
// buffer, flagged dropped.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#define ETH_P_8021Q_BE bpf_htons(0x8100)
#define ETH_P_8021AD_BE bpf_htons(0x88A8)
#define ETH_P_IP_BE bpf_htons(0x0800)
#define ETH_P_IPV6_BE bpf_htons(0x86DD)

#include "rfm_shared.h"

// ---- the XDP program's own maps ----

#define XDP_MAX_RULES 64
// Counter rows per interface: the rules, then the blocklist and the
// blackhole list.
#define XDP_ROW_BLOCKLIST 64
#define XDP_ROW_BLACKHOLE 65
#define XDP_ROWS 66
#define XDP_MAX_IFACES 64
#define XDP_MAX_EXT_HDRS 8

#define XDP_ACT_PASS 0
#define XDP_ACT_DROP 1
#define XDP_ACT_RATE_LIMIT 2

// xdp_cfg.flags: which lists hold entries, so empty ones cost nothing.
#define XDP_CFG_BLOCK4 1u
#define XDP_CFG_BLOCK6 2u
#define XDP_CFG_HOLE4 4u
#define XDP_CFG_HOLE6 8u
#define XDP_CFG_COUNT 16u // sample dropped packets into the TC ring
#define XDP_CFG_HOST4 32u // xdp_host4 holds entries
#define XDP_CFG_HOST6 64u

struct xdp_cfg {
	__u32 gen;   // rule generation in use, 0 or 1
	__u32 flags; // XDP_CFG_*
};

// What a generation's rule set allows without looking at a field: the
// rules that exist, and those with no condition on each field.
struct xdp_gen {
	__u64 valid;
	__u64 src_any;
	__u64 dst_any;
	__u64 sport_any;
	__u64 dport_any;
	// The rules by action (the others pass): a drop or pass rule decides
	// without its xdp_rules entry, which only rate_limit needs.
	__u64 drop;
	__u64 rate_limit;
	// Rules with IPv4 (pfx4) and IPv6 (pfx6) prefixes, by side (0
	// source, 1 destination): a rule with prefixes of the other family
	// only cannot match, and needs no lookup.
	__u64 pfx4[2];
	__u64 pfx6[2];
	// Rules allowing each protocol: read from this value, which the
	// packet has looked up already, not a map of its own.
	__u64 proto[256];
};

struct xdp_rule {
	__u32 action;  // XDP_ACT_*
	__u32 pad;
	__u64 cost_ns; // rate_limit: 1e9 / pps, the time one packet uses up
	__u64 burst_ns;
};

// Rule prefixes: the data starts with gen, side (0 source, 1
// destination) and family, always matched in full, then the address.
// An entry's value holds the bits of every rule with a prefix covering
// it, less specific ones included, because the trie returns only the
// longest match.
struct xdp_rule_key {
	__u32 prefixlen;
	__u8 gen;
	__u8 side;
	__u8 fam;
	__u8 pad;
	__u8 addr[16];
};

struct xdp_block4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct xdp_block6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

// Token bucket of one source (/32 or /64) under one rate_limit rule.
struct xdp_bucket_key {
	__u32 rule;
	__u32 fam;
	__u8 addr[8];
};

struct xdp_bucket {
	__u64 tat_ns; // theoretical arrival time of the next packet
};

// By verdict and, for drops, family: 0 passed, RFM_FAM_IPV4 (1) and
// RFM_FAM_IPV6 (2) dropped. Drops are split by family because they
// stand in for the interface rx counters, which are.
struct xdp_counter {
	__u64 packets[RFM_FAM_MAX];
	__u64 bytes[RFM_FAM_MAX];
};

struct xdp_iface {
	__u32 ifindex; // 0: a free entry
	__u32 slot;
};

// Interfaces find their counter slot in an array indexed by ifindex
// modulo XDP_IFACE_TABLE, checked against the ifindex stored there (an
// array lookup is inlined; a hash lookup cost ~10 ns per counted
// packet). One whose entry another interface holds is in xdp_ifaces_spill.
#define XDP_IFACE_TABLE 4096

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdp_cfg);
} xdp_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct xdp_gen);
} xdp_gens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * XDP_MAX_RULES);
	__type(key, __u32);
	__type(value, struct xdp_rule);
} xdp_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct xdp_rule_key);
	__type(value, __u64);
} xdp_rule_pfx SEC(".maps");

// IPv4 rule prefixes by /16 block, by (gen * 2 + side) * 65536 + the
// address's top 16 bits: full holds the rules with a prefix covering the
// whole block, part those with a longer prefix inside it. Only when a
// candidate rule is in part alone does the trie have to be asked.
struct xdp_block16 {
	__u64 full;
	__u64 part;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4 * 65536);
	__type(key, __u32);
	__type(value, struct xdp_block16);
} xdp_pfx16 SEC(".maps");


// Rules allowing each port, by (gen * 2 + side) * 65536 + port.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4 * 65536);
	__type(key, __u32);
	__type(value, __u64);
} xdp_ports SEC(".maps");

// Blocklist (source or destination) and blackhole list (destination).
// Values are unused (a byte); presence is the match. Blocklisted single
// addresses (/32, /128), most of a blocklist in practice, live in hash
// maps: a trie lookup walks one node per prefix bit that distinguishes
// its entries, which costs several times a hash lookup once it holds
// many; the tries keep the shorter prefixes.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1048576);
	__type(key, __u32);
	__type(value, __u8);
} xdp_host4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1048576);
	__type(key, struct in6_addr);
	__type(value, __u8);
} xdp_host6 SEC(".maps");

// A bit per hash of an IPv4 address (first 2^24 bits) and of an IPv6
// address (next 2^24), set while a blocklisted single address hashes to
// it: an address whose bit is clear is not in xdp_host4/6, and an
// inlined array load is much cheaper than a hash lookup (about 5 ns
// each, two per packet). Hashing the whole address, not its /24, keeps
// neighbours of listed addresses off the hash lookups too: with n listed
// addresses of a family, n / 2^24 of the others take them (0.6% at
// 100,000). Userspace sets a bit before adding the address to the hash
// and clears it after the last one on it goes.
#define XDP_HOST_FILTER_BITS (1u << 24)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * XDP_HOST_FILTER_BITS / 64);
	__type(key, __u32);
	__type(value, __u64);
} xdp_host_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1048576);
	__type(key, struct xdp_block4_key);
	__type(value, __u8);
} xdp_block4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1048576);
	__type(key, struct xdp_block6_key);
	__type(value, __u8);
} xdp_block6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1048576);
	__type(key, struct xdp_block4_key);
	__type(value, __u8);
} xdp_hole4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1048576);
	__type(key, struct xdp_block6_key);
	__type(value, __u8);
} xdp_hole6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct xdp_bucket_key);
	__type(value, struct xdp_bucket);
} xdp_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDP_IFACE_TABLE);
	__type(key, __u32);
	__type(value, struct xdp_iface);
} xdp_ifaces SEC(".maps");

// ifindex -> counter slot, for interfaces whose xdp_ifaces entry was taken.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XDP_MAX_IFACES);
	__type(key, __u32);
	__type(value, __u32);
} xdp_ifaces_spill SEC(".maps");

// By (slot * 2 + gen) * XDP_ROWS + row: each generation has its own rows,
// so userspace can fold a retired generation's counts under the names of
// the rules they belonged to.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDP_MAX_IFACES * 2 * XDP_ROWS);
	__type(key, __u32);
	__type(value, struct xdp_counter);
} xdp_counters SEC(".maps");

// Generic XDP runs on an skb, after GRO: a TCP stream arrives as
// super-packets of up to 64 KiB, each one frame to the program, which
// xdp_md cannot tell apart from one packet. The kernel's segment count
// is in the skb's shared info. rfm_xdp_skb, on the netif_receive_skb
// tracepoint (which __netif_receive_skb_core fires for each skb on the
// same CPU just before it runs generic XDP), keeps it here for the XDP
// program; the program trusts it only for the interface and the frame
// length it was written for.
struct xdp_skb_gso {
	__u32 ifindex; // skb->dev->ifindex
	__u32 len;     // skb->len: the frame less its Ethernet header
	__u16 gso_size;
	__u16 gso_segs; // 0 in packets from untrusted sources (virtio, tap)
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdp_skb_gso);
} xdp_skb_gso SEC(".maps");

// The kernel's structs, as much as is read of them; CO-RE finds the
// offsets in the running kernel's BTF.
struct net_device {
	int ifindex;
} __attribute__((preserve_access_index));

struct sk_buff {
	unsigned int len;
	struct net_device *dev;
	unsigned char *head;
	unsigned int end; // offset of the shared info from head (64-bit kernels)
} __attribute__((preserve_access_index));

struct skb_shared_info {
	unsigned short gso_size;
	unsigned short gso_segs;
} __attribute__((preserve_access_index));

SEC("tp_btf/netif_receive_skb")
int rfm_xdp_skb(unsigned long long *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	__u32 zero = 0;
	struct xdp_skb_gso *g = bpf_map_lookup_elem(&xdp_skb_gso, &zero);
	if (!g)
		return 0;
	struct skb_shared_info *sh = (void *)(skb->head + skb->end);
	g->gso_size = BPF_CORE_READ(sh, gso_size);
	g->gso_segs = BPF_CORE_READ(sh, gso_segs);
	g->ifindex = skb->dev->ifindex;
	g->len = skb->len;
	return 0;
}

// What the parser found. Addresses are kept as in rfm_event: IPv4
// v4-mapped, so an event is a copy.
struct xdp_pkt {
	__u8 src[16];
	__u8 dst[16];
	__u32 fam;
	__u32 ip_len; // IP total length
	__u16 sport;  // host order
	__u16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 tos; // DSCP << 2
	__u8 ttl;
	__u16 vlan_outer;
	__u16 vlan_inner;
	// ports: 1 the ports were read; 0 the protocol has none; 2 they
	// exist but are not in this packet (a later fragment, or past the
	// extension headers walked): port conditions are not applied.
	__u8 ports;
	__u16 l4_off; // where the transport header starts, with ports read
};

#define XDP_PORTS_NONE 0
#define XDP_PORTS_READ 1
#define XDP_PORTS_UNKNOWN 2

// Loads from the frame of 2, 4 and 8 bytes at once: a memcpy or a
// byte-wise read compiles to one load per byte, as clang cannot assume
// the frame's alignment; the verifier allows unaligned packet loads on
// the architectures rfm runs on.
static __always_inline __u16 xdp_load16(const __u8 *b)
{
	return bpf_ntohs(*(const __be16 *)b);
}

static __always_inline void xdp_copy4(__u8 *dst, const __u8 *b)
{
	__u32 w = *(const __u32 *)b;
	__builtin_memcpy(dst, &w, 4);
}

static __always_inline void xdp_copy16(__u8 *dst, const __u8 *b)
{
	__u64 w0 = *(const __u64 *)b;
	__u64 w1 = *(const __u64 *)(b + 8);
	__builtin_memcpy(dst, &w0, 8);
	__builtin_memcpy(dst + 8, &w1, 8);
}

static __always_inline int xdp_has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP ||
	       proto == IPPROTO_SCTP || proto == IPPROTO_UDPLITE;
}

// xdp_parse fills p from the frame. Returns 0 for an IP packet whose
// headers are whole, -1 for anything else (which always passes).
static __always_inline int xdp_parse(struct xdp_md *ctx, struct xdp_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 off = ETH_HLEN;
	if (data + ETH_HLEN > end)
		return -1;
	__be16 proto = ((struct ethhdr *)data)->h_proto;
	p->vlan_outer = 0;
	p->vlan_inner = 0;
	p->tcp_flags = 0;
	for (int i = 0; i < 2; i++) {
		if (proto != ETH_P_8021Q_BE && proto != ETH_P_8021AD_BE)
			break;
		if (data + off + 4 > end)
			return -1;
		__u16 vid = bpf_ntohs(*(__be16 *)(data + off)) & 0x0fff;
		if (i == 0)
			p->vlan_outer = vid;
		else
			p->vlan_inner = vid;
		proto = *(__be16 *)(data + off + 2);
		off += 4;
	}
	__u8 *ip = data + off;
	__u32 avail = end - (void *)ip;
	p->sport = 0;
	p->dport = 0;
	p->ports = XDP_PORTS_NONE;
	if (proto == ETH_P_IP_BE) {
		if ((void *)ip + 20 > end)
			return -1;
		__u32 ihl = (ip[0] & 0x0f) * 4;
		if ((ip[0] >> 4) != 4 || ihl < 20)
			return -1;
		__u32 tot = ((__u32)ip[2] << 8) | ip[3];
		if (tot < ihl || tot > avail)
			return -1;
		p->fam = RFM_FAM_IPV4;
		p->ip_len = tot;
		p->tos = ip[1] & 0xfc;
		p->ttl = ip[8];
		__builtin_memset(p->src, 0, 10);
		__builtin_memset(p->dst, 0, 10);
		p->src[10] = p->src[11] = 0xff;
		p->dst[10] = p->dst[11] = 0xff;
		xdp_copy4(p->src + 12, ip + 12);
		xdp_copy4(p->dst + 12, ip + 16);
		p->proto = ip[9];
		if (!xdp_has_ports(p->proto))
			return 0;
		if ((((__u16)ip[6] << 8) | ip[7]) & 0x1fff) {
			p->ports = XDP_PORTS_UNKNOWN; // later fragment
			return 0;
		}
		if (ihl + 4 > tot)
			return -1;
		__u8 *l4 = ip + (ihl & 0x3c);
		if ((void *)l4 + 4 > end)
			return -1;
		p->sport = xdp_load16(l4);
		p->dport = xdp_load16(l4 + 2);
		p->ports = XDP_PORTS_READ;
		p->l4_off = off + (ihl & 0x3c);
		if (p->proto == IPPROTO_TCP && ihl + 14 <= tot && (void *)l4 + 14 <= end)
			p->tcp_flags = l4[13];
		return 0;
	}
	if (proto != ETH_P_IPV6_BE)
		return -1;
	if ((void *)ip + 40 > end)
		return -1;
	if ((ip[0] >> 4) != 6)
		return -1;
	__u32 len = (((__u32)ip[4] << 8) | ip[5]) + 40;
	if (len == 40 && avail > 40) // jumbogram: payload length 0
		len = avail;
	if (len > avail)
		return -1;
	p->fam = RFM_FAM_IPV6;
	p->ip_len = len;
	p->tos = ((ip[0] << 4) | (ip[1] >> 4)) & 0xfc;
	p->ttl = ip[7];
	xdp_copy16(p->src, ip + 8);
	xdp_copy16(p->dst, ip + 24);
	__u8 next = ip[6];
	__u32 hoff = 40;
	for (int i = 0; i <= XDP_MAX_EXT_HDRS; i++) {
		if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING &&
		    next != IPPROTO_DSTOPTS && next != IPPROTO_AH && next != IPPROTO_FRAGMENT)
			break;
		if (i == XDP_MAX_EXT_HDRS) {
			// Longer chain than walked: the transport header is somewhere
			// behind it; match by addresses.
			p->proto = next;
			p->ports = XDP_PORTS_UNKNOWN;
			return 0;
		}
		if (hoff + 8 > len || hoff > 2048)
			return -1;
		__u8 *x = ip + hoff;
		if ((void *)x + 8 > end)
			return -1;
		if (next == IPPROTO_FRAGMENT) {
			next = x[0];
			hoff += 8;
			if ((((__u16)x[2] << 8) | x[3]) & 0xfff8) {
				p->proto = next;
				p->ports = xdp_has_ports(next) ? XDP_PORTS_UNKNOWN : XDP_PORTS_NONE;
				return 0;
			}
		} else if (next == IPPROTO_AH) {
			next = x[0];
			hoff += ((__u32)x[1] + 2) * 4;
		} else {
			next = x[0];
			hoff += ((__u32)x[1] + 1) * 8;
		}
	}
	p->proto = next;
	if (!xdp_has_ports(next))
		return 0;
	if (hoff + 4 > len || hoff > 4096)
		return -1;
	__u8 *l4 = ip + hoff;
	if ((void *)l4 + 4 > end)
		return -1;
	p->sport = xdp_load16(l4);
	p->dport = xdp_load16(l4 + 2);
	p->ports = XDP_PORTS_READ;
	p->l4_off = off + hoff;
	if (next == IPPROTO_TCP && hoff + 14 <= len && (void *)l4 + 14 <= end)
		p->tcp_flags = l4[13];
	return 0;
}

// xdp_host_maybe is whether addr may be a blocklisted single address:
// false when its bit in xdp_host_filter is clear. The hash is Fibonacci
// hashing of the address read as little-endian words (IPv6: the two
// halves folded with a multiply first); internal/datapath/xdp computes
// the same.
static __always_inline int xdp_host_maybe(__u32 fam, const __u8 *addr)
{
	__u32 bit;
	if (fam == RFM_FAM_IPV4) {
		__u32 a;
		__builtin_memcpy(&a, addr + 12, 4);
		bit = (__u32)(((__u64)a * 0x9e3779b97f4a7c15ull) >> 40);
	} else {
		__u64 hi, lo;
		__builtin_memcpy(&hi, addr, 8);
		__builtin_memcpy(&lo, addr + 8, 8);
		__u64 h = (hi ^ (lo * 0x9e3779b97f4a7c15ull)) * 0x9e3779b97f4a7c15ull;
		bit = XDP_HOST_FILTER_BITS + (__u32)(h >> 40);
	}
	__u32 k = bit / 64;
	__u64 *w = bpf_map_lookup_elem(&xdp_host_filter, &k);
	return w && ((*w >> (bit & 63)) & 1);
}

static __always_inline int xdp_listed(void *v4, void *v6, const struct xdp_pkt *p,
				      const __u8 *addr)
{
	if (p->fam == RFM_FAM_IPV4) {
		struct xdp_block4_key k = {.prefixlen = 32};
		__builtin_memcpy(k.addr, addr + 12, 4);
		return bpf_map_lookup_elem(v4, &k) != NULL;
	}
	struct xdp_block6_key k = {.prefixlen = 128};
	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(v6, &k) != NULL;
}

// xdp_pfx_rules is the set of rules whose prefixes on side contain addr.
static __always_inline __u64 xdp_pfx_rules(__u32 gen, __u8 side, const struct xdp_pkt *p,
					   const __u8 *addr)
{
	struct xdp_rule_key k = {.gen = gen, .side = side, .fam = p->fam};
	if (p->fam == RFM_FAM_IPV4) {
		k.prefixlen = 32 + 32;
		__builtin_memcpy(k.addr, addr + 12, 4);
	} else {
		k.prefixlen = 32 + 128;
		__builtin_memcpy(k.addr, addr, 16);
	}
	__u64 *m = bpf_map_lookup_elem(&xdp_rule_pfx, &k);
	return m ? *m : 0;
}

// xdp_side_rules is the set of rules among want whose prefixes on side
// contain addr: for IPv4 from the /16 table, asking the trie only when a
// wanted rule has a longer prefix in the address's /16.
static __always_inline __u64 xdp_side_rules(__u32 gen, __u8 side, const struct xdp_pkt *p,
					    const __u8 *addr, __u64 want)
{
	if (p->fam != RFM_FAM_IPV4)
		return xdp_pfx_rules(gen, side, p, addr);
	__u32 k = (gen * 2 + side) * 65536 + (((__u32)addr[12] << 8) | addr[13]);
	struct xdp_block16 *b = bpf_map_lookup_elem(&xdp_pfx16, &k);
	if (!b)
		return 0;
	if (!(want & b->part & ~b->full))
		return b->full;
	return b->full | xdp_pfx_rules(gen, side, p, addr);
}

static __always_inline __u64 xdp_port_rules(__u32 gen, __u32 side, __u16 port, __u64 any,
					    const struct xdp_pkt *p)
{
	if (p->ports == XDP_PORTS_UNKNOWN)
		return ~0ull;
	if (p->ports == XDP_PORTS_NONE)
		return any;
	__u32 k = (gen * 2 + side) * 65536 + port;
	__u64 *m = bpf_map_lookup_elem(&xdp_ports, &k);
	return m ? *m : 0;
}

// xdp_lowest_bit is the index of m's lowest set bit (m != 0): the first
// rule in config order. Spelled out because clang's BPF backend has no
// count-trailing-zeros for -mcpu=v1.
static __always_inline int xdp_lowest_bit(__u64 m)
{
	int n = 0;
	if (!(m & 0xffffffffull)) {
		n += 32;
		m >>= 32;
	}
	if (!(m & 0xffff)) {
		n += 16;
		m >>= 16;
	}
	if (!(m & 0xff)) {
		n += 8;
		m >>= 8;
	}
	if (!(m & 0xf)) {
		n += 4;
		m >>= 4;
	}
	if (!(m & 0x3)) {
		n += 2;
		m >>= 2;
	}
	if (!(m & 0x1))
		n += 1;
	return n;
}

// xdp_match returns the index of the first rule matching p, or -1, and
// sets *act to its action.
static __always_inline int xdp_match(__u32 gen, const struct xdp_pkt *p, __u32 *act)
{
	struct xdp_gen *g = bpf_map_lookup_elem(&xdp_gens, &gen);
	if (!g || !g->valid)
		return -1;
	__u64 m = g->valid & g->proto[p->proto];
	if (!m)
		return -1;
	// A port table only when a remaining rule has a condition on that
	// port: its entries hold the any-port rules too, so otherwise it
	// would leave m as it is.
	if (m & ~g->sport_any)
		m &= xdp_port_rules(gen, 0, p->sport, g->sport_any, p);
	if (!m)
		return -1;
	if (m & ~g->dport_any)
		m &= xdp_port_rules(gen, 1, p->dport, g->dport_any, p);
	if (!m)
		return -1;
	// Prefixes only when a remaining rule has prefixes of the packet's
	// family on that side; the others with prefixes there cannot match.
	int v4 = p->fam == RFM_FAM_IPV4;
	__u64 want = m & ~g->src_any & (v4 ? g->pfx4[0] : g->pfx6[0]);
	m &= g->src_any | (want ? xdp_side_rules(gen, 0, p, p->src, want) : 0);
	if (!m)
		return -1;
	want = m & ~g->dst_any & (v4 ? g->pfx4[1] : g->pfx6[1]);
	m &= g->dst_any | (want ? xdp_side_rules(gen, 1, p, p->dst, want) : 0);
	if (!m)
		return -1;
	__u64 first = m & -m;
	*act = (g->drop & first) ? XDP_ACT_DROP : (g->rate_limit & first) ? XDP_ACT_RATE_LIMIT : XDP_ACT_PASS;
	return xdp_lowest_bit(m);
}

// xdp_rate_ok charges one packet to its source's bucket (GCRA: a packet
// passes when the bucket's theoretical arrival time is not more than a
// burst ahead of now). Concurrent CPUs may race on one bucket; the
// error is a packet or so per race, not a leak.
static __always_inline int xdp_rate_ok(__u32 idx, const struct xdp_rule *r,
				       const struct xdp_pkt *p)
{
	struct xdp_bucket_key k = {.rule = idx, .fam = p->fam};
	if (p->fam == RFM_FAM_IPV4)
		__builtin_memcpy(k.addr, p->src + 12, 4);
	else
		__builtin_memcpy(k.addr, p->src, 8); // the /64
	__u64 now = bpf_ktime_get_ns();
	struct xdp_bucket *b = bpf_map_lookup_elem(&xdp_buckets, &k);
	if (!b) {
		struct xdp_bucket nb = {.tat_ns = now + r->cost_ns};
		bpf_map_update_elem(&xdp_buckets, &k, &nb, BPF_ANY);
		return 1;
	}
	__u64 tat = b->tat_ns;
	if (tat < now)
		tat = now;
	if (tat + r->cost_ns > now + r->burst_ns)
		return 0;
	b->tat_ns = tat + r->cost_ns;
	return 1;
}

// XDP_NO_SLOT: the interface has no counter slot (not attached by rfm).
#define XDP_NO_SLOT XDP_MAX_IFACES

// xdp_slot is the interface's counter slot, or XDP_NO_SLOT.
static __always_inline __u32 xdp_slot(__u32 ifindex)
{
	__u32 key = ifindex & (XDP_IFACE_TABLE - 1);
	struct xdp_iface *i = bpf_map_lookup_elem(&xdp_ifaces, &key);
	if (i && i->ifindex == ifindex)
		return i->slot;
	__u32 *spilled = bpf_map_lookup_elem(&xdp_ifaces_spill, &ifindex);
	return spilled ? *spilled : XDP_NO_SLOT;
}

// xdp_count_slot counts a packet in its row; col is 0 for a pass, the
// packet's family for a drop.
static __always_inline void xdp_count_slot(__u32 slot, __u32 gen, __u32 row, __u32 col,
					   __u32 segs, __u32 bytes)
{
	if (slot >= XDP_MAX_IFACES || col >= RFM_FAM_MAX)
		return;
	__u32 k = (slot * 2 + (gen & 1)) * XDP_ROWS + row;
	struct xdp_counter *c = bpf_map_lookup_elem(&xdp_counters, &k);
	if (c) {
		c->packets[col] += segs;
		c->bytes[col] += bytes;
	}
}

// xdp_gso_wire is what a frame of bytes is on the wire, as bpf/rfm.c
// counts a GSO skb at TC: the packets (high 32 bits) and their frames'
// bytes (low 32 bits), each segment repeating the headers up to the
// payload. In generic mode that is the skb's gso_segs (or its payload
// over gso_size when the source left gso_segs 0) when rfm_xdp_skb
// recorded this skb; else the frame is one packet. Only the generic
// mode program (rfm_xdp_generic) has it.
static __always_inline __u64 xdp_gso_wire(struct xdp_md *ctx, __u32 l4_off, __u32 proto, __u32 bytes)
{
	__u64 one = (1ull << 32) | bytes;
	__u32 zero = 0;
	struct xdp_skb_gso *g = bpf_map_lookup_elem(&xdp_skb_gso, &zero);
	if (!g || !g->gso_size || g->ifindex != ctx->ingress_ifindex || g->len + ETH_HLEN != bytes)
		return one;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 hdr = l4_off;
	if (hdr > 4096)
		return one;
	if (proto == IPPROTO_TCP) {
		// Bounded where it is used: clang may check hdr above in another
		// register than this one (after a spill the verifier no longer
		// knows the bound), and would drop a plain mask it sees is moot.
		__u32 off = hdr;
		asm volatile("" : "+r"(off));
		__u8 *tcp = data + (off & 0x1fff);
		if ((void *)tcp + 13 > end)
			return one;
		hdr += (tcp[12] >> 4) * 4;
	} else if (proto == IPPROTO_UDP) {
		hdr += 8;
	} else {
		return one;
	}
	__u32 segs = g->gso_segs;
	if (segs == 0 && bytes > hdr)
		segs = (bytes - hdr + g->gso_size - 1) / g->gso_size;
	if (segs <= 1)
		return one;
	return ((__u64)segs << 32) | (bytes + (segs - 1) * hdr);
}

static __always_inline __u32 xdp_gap(__u32 rate)
{
	__u64 span = rate > 0x7fffffffu ? 0xffffffffull : 2ull * rate - 1;
	return 1 + (__u32)(((__u64)bpf_get_prandom_u32() * span) >> 32);
}

// xdp_sample_drop reports a dropped packet as bpf/rfm.c reports what it
// samples: the same per-CPU countdown decides, so a dropped packet is
// sampled exactly as it would have been at TC. The event goes to the
// ring on its own (drops are rare next to the TC batches).
// segs and l3_bytes are the packets and the L3 bytes of all of them
// (more than one only for a GRO/GSO super-packet in generic mode).
static __always_inline void xdp_sample_drop(__u32 ifindex, const struct xdp_pkt *p, __u32 segs,
					    __u32 l3_bytes)
{
	__u32 zero = 0;
	struct rfm_config *cfg = bpf_map_lookup_elem(&rfm_config, &zero);
	if (!cfg)
		return;
	__u32 rate = cfg->sample_rate;
	if (rate == 0)
		return;
	if (rate > 1) {
		struct rfm_sampler *s = bpf_map_lookup_elem(&rfm_sampler, &zero);
		if (!s)
			return;
		if (s->rate != rate) {
			s->rate = rate;
			s->countdown = xdp_gap(rate);
		}
		if (--s->countdown != 0)
			return;
		s->countdown = xdp_gap(rate);
	}
	struct rfm_event_x x = {};
	struct rfm_event *ev = &x.ev;
	__builtin_memcpy(ev->src, p->src, 16);
	__builtin_memcpy(ev->dst, p->dst, 16);
	ev->boot_ns = bpf_ktime_get_boot_ns();
	ev->ifindex = ifindex;
	ev->in_ifindex = ifindex;
	ev->len = l3_bytes;
	ev->rate = rate;
	ev->sport = p->ports == XDP_PORTS_READ ? p->sport : 0;
	ev->dport = p->ports == XDP_PORTS_READ ? p->dport : 0;
	ev->segs = segs > 0xffff ? 0xffff : segs;
	ev->proto = p->proto;
	ev->flags = RFM_EV_DROPPED;
	__u32 size = sizeof(struct rfm_event);
	if (rfm_fields) {
		size = sizeof(x);
		x.f.version = RFM_FIELDS_VERSION;
		if (rfm_fields & RFM_F_TCP_FLAGS)
			x.f.tcp_flags = p->tcp_flags;
		if (rfm_fields & RFM_F_DSCP)
			x.f.tos = p->tos;
		if (rfm_fields & RFM_F_TTL)
			x.f.ttl = p->ttl;
		if (rfm_fields & RFM_F_VLAN) {
			x.f.vlan_outer = p->vlan_outer;
			x.f.vlan_inner = p->vlan_inner;
		}
	}
	if (bpf_ringbuf_output(&rfm_events, &x, size, BPF_RB_NO_WAKEUP)) {
		struct rfm_dp_stats *st = bpf_map_lookup_elem(&rfm_dp_stats, &zero);
		if (st)
			st->ring_drops++;
	}
}

static __always_inline int xdp_drop(struct xdp_md *ctx, __u32 flags, __u32 gen,
				    const struct xdp_pkt *p, __u32 row, __u32 bytes,
				    const int generic)
{
	// ingress_ifindex is three dependent loads (xdp_buff, rxq, device):
	// read once.
	__u32 ifindex = ctx->ingress_ifindex;
	// The sampler first: its loads do not wait for ifindex, so they run
	// while the counter slot is looked up (1-2 ns a drop less than
	// sampling last, bench/xdp-results.txt).
	if (!generic && (flags & XDP_CFG_COUNT))
		xdp_sample_drop(ifindex, p, 1, p->ip_len);
	__u32 slot = xdp_slot(ifindex);
	__u32 segs = 1;
	if (generic && p->ports == XDP_PORTS_READ) {
		__u64 w = xdp_gso_wire(ctx, p->l4_off, p->proto, bytes);
		segs = w >> 32;
		__u32 l3_bytes = p->ip_len;
		if (segs > 1) {
			// Every segment repeats the link header too; the event
			// counts L3 bytes, as rfm.c's do.
			__u32 l2 = bytes > p->ip_len ? bytes - p->ip_len : 0;
			l3_bytes = (__u32)w - segs * l2;
		}
		bytes = (__u32)w;
		if (flags & XDP_CFG_COUNT)
			xdp_sample_drop(ifindex, p, segs, l3_bytes);
	} else if (generic && (flags & XDP_CFG_COUNT)) {
		xdp_sample_drop(ifindex, p, 1, p->ip_len);
	}
	// bpf/rfm.c's ingress counter will never see this packet: the row's
	// per-family drop count is added to it in userspace.
	xdp_count_slot(slot, gen, row, p->fam, segs, bytes);
	return XDP_DROP;
}

// rfm_xdp_main is the program; generic is a constant: the generic mode
// build also counts a GRO/GSO super-packet as its segments
// (xdp_gso_wire), which native mode never sees and so does not pay for.
static __always_inline int rfm_xdp_main(struct xdp_md *ctx, const int generic)
{
	struct xdp_pkt p;
	if (xdp_parse(ctx, &p))
		return XDP_PASS;
	__u32 zero = 0;
	struct xdp_cfg *cfg = bpf_map_lookup_elem(&xdp_cfg, &zero);
	if (!cfg)
		return XDP_PASS;
	__u32 flags = cfg->flags;
	__u32 gen = cfg->gen & 1;
	__u32 bytes = ctx->data_end - ctx->data;
	if (p.fam == RFM_FAM_IPV4) {
		if ((flags & XDP_CFG_HOST4) &&
		    ((xdp_host_maybe(RFM_FAM_IPV4, p.src) &&
		      bpf_map_lookup_elem(&xdp_host4, p.src + 12)) ||
		     (xdp_host_maybe(RFM_FAM_IPV4, p.dst) &&
		      bpf_map_lookup_elem(&xdp_host4, p.dst + 12))))
			return xdp_drop(ctx, flags, gen, &p, XDP_ROW_BLOCKLIST, bytes, generic);
		if ((flags & XDP_CFG_BLOCK4) &&
		    (xdp_listed(&xdp_block4, &xdp_block6, &p, p.src) ||
		     xdp_listed(&xdp_block4, &xdp_block6, &p, p.dst)))
			return xdp_drop(ctx, flags, gen, &p, XDP_ROW_BLOCKLIST, bytes, generic);
		if ((flags & XDP_CFG_HOLE4) && xdp_listed(&xdp_hole4, &xdp_hole6, &p, p.dst))
			return xdp_drop(ctx, flags, gen, &p, XDP_ROW_BLACKHOLE, bytes, generic);
	} else {
		if ((flags & XDP_CFG_HOST6) &&
		    ((xdp_host_maybe(RFM_FAM_IPV6, p.src) && bpf_map_lookup_elem(&xdp_host6, p.src)) ||
		     (xdp_host_maybe(RFM_FAM_IPV6, p.dst) && bpf_map_lookup_elem(&xdp_host6, p.dst))))
			return xdp_drop(ctx, flags, gen, &p, XDP_ROW_BLOCKLIST, bytes, generic);
		if ((flags & XDP_CFG_BLOCK6) &&
		    (xdp_listed(&xdp_block4, &xdp_block6, &p, p.src) ||
		     xdp_listed(&xdp_block4, &xdp_block6, &p, p.dst)))
			return xdp_drop(ctx, flags, gen, &p, XDP_ROW_BLOCKLIST, bytes, generic);
		if ((flags & XDP_CFG_HOLE6) && xdp_listed(&xdp_hole4, &xdp_hole6, &p, p.dst))
			return xdp_drop(ctx, flags, gen, &p, XDP_ROW_BLACKHOLE, bytes, generic);
	}
	__u32 act = XDP_ACT_PASS;
	int idx = xdp_match(gen, &p, &act);
	if (idx < 0 || idx >= XDP_MAX_RULES)
		return XDP_PASS;
	if (act == XDP_ACT_DROP)
		return xdp_drop(ctx, flags, gen, &p, idx, bytes, generic);
	if (act == XDP_ACT_RATE_LIMIT) {
		__u32 rk = gen * XDP_MAX_RULES + idx;
		struct xdp_rule *r = bpf_map_lookup_elem(&xdp_rules, &rk);
		if (r && !xdp_rate_ok(idx, r, &p))
			return xdp_drop(ctx, flags, gen, &p, idx, bytes, generic);
	}
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 slot = xdp_slot(ifindex);
	__u32 segs = 1;
	if (generic && p.ports == XDP_PORTS_READ) {
		__u64 w = xdp_gso_wire(ctx, p.l4_off, p.proto, bytes);
		segs = w >> 32;
		bytes = (__u32)w;
	}
	xdp_count_slot(slot, gen, idx, 0, segs, bytes);
	return XDP_PASS;
}

// Native mode.
SEC("xdp")
int rfm_xdp(struct xdp_md *ctx)
{
	return rfm_xdp_main(ctx, 0);
}

// Generic (skb) mode.
SEC("xdp")
int rfm_xdp_generic(struct xdp_md *ctx)
{
	return rfm_xdp_main(ctx, 1);
}

// The cost floor for benchmarks: what any XDP program costs to run.
SEC("xdp")
int rfm_xdp_floor(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
