# SPDX-License-Identifier: AGPL-3.0-only
# Sourced by the bench scripts: the lab they share, built the way
# test/lab.NewPair builds it for the tests.

# netns_pair NSA DEVA MACA NSB DEVB MACB creates two namespaces that send
# nothing on their own (no DAD, router solicitations or link-local
# addresses) and joins them with a veth, DEVA in NSA and DEVB in NSB.
netns_pair() {
	local ns conf kv
	for ns in "$1" "$4"; do
		ip netns add "$ns"
		for conf in all default; do
			for kv in accept_dad=0 accept_ra=0 router_solicitations=0 addr_gen_mode=1; do
				# /proc/sys rather than sysctl(8): minimal systems have no procps.
				ip netns exec "$ns" sh -c "echo ${kv#*=} > /proc/sys/net/ipv6/conf/$conf/${kv%%=*}"
			done
		done
		ip -n "$ns" link set lo up
	done
	ip link add "$2" netns "$1" address "$3" type veth peer name "$5" netns "$4" address "$6"
}

# veth_end NS DEV PEERMAC OWN/LEN PEER [OWN/LEN PEER]... brings up one
# end of the pair: offloads off (one skb per packet), no ARP or
# neighbour discovery (permanent entries for each peer address), then
# each own address, IPv4 or IPv6.
veth_end() {
	local ns=$1 dev=$2 mac=$3
	shift 3
	ip netns exec "$ns" ethtool -K "$dev" gro off gso off tso off >/dev/null
	ip -n "$ns" link set "$dev" arp off
	while (($# >= 2)); do
		if [[ $1 == *:* ]]; then
			ip -n "$ns" addr add "$1" dev "$dev" nodad
		else
			ip -n "$ns" addr add "$1" dev "$dev"
		fi
		ip -n "$ns" neigh replace "$2" lladdr "$mac" dev "$dev" nud permanent
		shift 2
	done
	ip -n "$ns" link set "$dev" up
}
