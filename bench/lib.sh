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

# sender_lab NAME PORT builds the agent and bench/sender into a
# temporary directory and sets up the lab that bench/e2e.sh and
# bench/memory.sh share: namespaces $NSA (sending) and $NSB (the
# agent's, metrics on 127.0.0.1:PORT), joined by a veth ($DEVA, $DEVB),
# with a bound UDP socket on $ADDRB:9 so no ICMP port unreachable comes
# back. Everything goes on exit, the agent ($AGENT_PID, when set) first.
sender_lab() {
	local name=$1
	PORT=$2
	if [[ $(id -u) != 0 ]]; then
		echo "$(basename "$0"): needs root (network namespaces, BPF)" >&2
		exit 1
	fi
	NSA=rfm$name-a-$$ NSB=rfm$name-b-$$
	DEVA=rfm$name-a DEVB=rfm$name-b
	ADDRA=198.18.0.1 ADDRB=198.19.255.2
	MACA=02:00:00:e2:e0:0a MACB=02:00:00:e2:e0:0b
	TMP=$(mktemp -d "/tmp/rfm-$name.XXXXXX")
	AGENT_PID= LISTEN_PID=
	trap sender_lab_cleanup EXIT

	echo "building agent and sender" >&2
	CGO_ENABLED=0 go build -o "$TMP/rfm" ./cmd/rfm
	go build -o "$TMP/sender" ./bench/sender

	netns_pair "$NSA" "$DEVA" "$MACA" "$NSB" "$DEVB" "$MACB"
	veth_end "$NSA" "$DEVA" "$MACB" "$ADDRA/15" "$ADDRB"
	veth_end "$NSB" "$DEVB" "$MACA" "$ADDRB/15" "$ADDRA"
	ip netns exec "$NSB" "$TMP/sender" -listen "$ADDRB:9" &
	LISTEN_PID=$!
}

# scrape prints the agent's /metrics.
scrape() { ip netns exec "$NSB" curl -sf "http://127.0.0.1:$PORT/metrics"; }

sender_lab_cleanup() {
	[[ -n $AGENT_PID ]] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
	[[ -n $LISTEN_PID ]] && kill "$LISTEN_PID" 2>/dev/null && wait "$LISTEN_PID" 2>/dev/null || true
	ip netns del "$NSA" 2>/dev/null || true
	ip netns del "$NSB" 2>/dev/null || true
	rm -rf "$TMP"
}

# start_agent INTERFACES [BPF_KEYS] starts the agent in $NSB with
# agent.interfaces = INTERFACES (a TOML array), the [agent.bpf] keys
# given (TOML lines), metrics on 127.0.0.1:$PORT and no control socket.
# It sets AGENT_PID; callers wait for what they need.
start_agent() {
	cat >"$TMP/rfm.toml" <<-TOML
	[agent]
	interfaces = $1
	[agent.bpf]
	${2:-}
	[agent.prometheus]
	host = "127.0.0.1"
	port = $PORT
	[agent.control]
	socket = ""
	TOML
	# ip netns exec execs the agent, so $! is the agent's own PID.
	ip netns exec "$NSB" "$TMP/rfm" agent -c "$TMP/rfm.toml" 2>"$TMP/agent.log" &
	AGENT_PID=$!
}

# lab_agent RING_BUF_SIZE starts the agent on $DEVB at sample_rate = 1
# (ring_buf_size as given; empty for the default).
lab_agent() {
	start_agent "[\"$DEVB\"]" "sample_rate = 1${1:+
ring_buf_size = $1}"
}
