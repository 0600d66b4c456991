#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# On-demand soak test of the real agent (not run in CI). Needs root.
#
# Two quiet network namespaces joined by a veth; the agent runs in A at
# sample_rate 10 on its veth end with:
#   - mixed traffic: a steady iperf3 UDP stream and a TCP stream, plus
#     churning UDP flows (a fresh source port per datagram, IPv4 and
#     IPv6) so flows keep starting and ending;
#   - a BMP feed: gobgpd in A monitoring its Loc-RIB to the agent, with
#     500 routes and 20 of them withdrawn and re-announced every cycle;
#   - IPFIX export to nfcapd in B.
# Every 10 s it records the agent's RSS, goroutines (go_goroutines), open
# fds, ring-buffer drops, active flows, RIB routes and IPFIX records into
# bench/soak-results.csv, then plots it with gnuplot into bench/soak.svg.
#
# Usage: sudo bench/soak.sh [DURATION]   (seconds, or with an s/m/h
# suffix; default 1h). Environment: INTERVAL (sample period, s),
# RESULTS (csv path), PLOT (svg path), SAMPLE_RATE.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

DURATION=${1:-1h}
INTERVAL=${INTERVAL:-10}
RESULTS=${RESULTS:-bench/soak-results.csv}
PLOT=${PLOT:-bench/soak.svg}
SAMPLE_RATE=${SAMPLE_RATE:-10}

case $DURATION in
*h) secs=$((${DURATION%h} * 3600)) ;;
*m) secs=$((${DURATION%m} * 60)) ;;
*s) secs=${DURATION%s} ;;
*) secs=$DURATION ;;
esac

if [[ $(id -u) != 0 ]]; then
	echo "soak.sh: needs root (network namespaces, BPF)" >&2
	exit 1
fi
for tool in ip ethtool iperf3 gobgpd gobgp nfcapd curl gnuplot; do
	if ! command -v "$tool" >/dev/null; then
		echo "soak.sh: $tool not installed (Debian: iproute2 ethtool iperf3 gobgpd nfdump curl gnuplot-nox)" >&2
		exit 1
	fi
done

A=rfmsoakA-$$ B=rfmsoakB-$$
DEVA=rfmsA DEVB=rfmsB
A4=198.18.0.1 B4=198.18.0.2 A6=2001:db8:50a::1 B6=2001:db8:50a::2
MACA=02:00:c6:12:50:01 MACB=02:00:c6:12:50:02
work=$(mktemp -d /tmp/rfm-soak.XXXXXX)
pids=()

cleanup() {
	# iperf3 writes its pid file without a newline: read them one by one.
	for f in "$work"/iperf*.pid; do [[ -f $f ]] && pids+=("$(<"$f")"); done
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	ip netns del "$A" 2>/dev/null || true
	ip netns del "$B" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

echo "soak: building rfm"
go build -o "$work/rfm" ./cmd/rfm

# Quiet namespace pair (bench/lib.sh).
netns_pair "$A" "$DEVA" "$MACA" "$B" "$DEVB" "$MACB"
veth_end "$A" "$DEVA" "$MACB" "$A4/24" "$B4" "$A6/64" "$B6"
veth_end "$B" "$DEVB" "$MACA" "$B4/24" "$A4" "$B6/64" "$A6"

# IPFIX collector.
mkdir -p "$work/nfcapd"
ip netns exec "$B" nfcapd -w "$work/nfcapd" -p 4739 -b "$B4" -t 60 >"$work/nfcapd.log" 2>&1 &
pids+=($!)

# BMP: gobgpd in A sends its Loc-RIB to the agent.
cat >"$work/gobgpd.toml" <<EOF
[global.config]
  as = 64500
  router-id = "198.18.0.1"
  port = -1
[[bmp-servers]]
  [bmp-servers.config]
    address = "127.0.0.1"
    port = 11019
    route-monitoring-policy = "local-rib"
    sys-name = "soak"
EOF

cat >"$work/rfm.toml" <<EOF
[agent]
interfaces = ["$DEVA"]
[agent.bpf]
sample_rate = $SAMPLE_RATE
[agent.collector]
eviction_timeout = "5s"
[agent.prometheus]
host = "127.0.0.1"
port = 9669
[agent.ipfix]
host = "$B4"
port = 4739
[agent.enrich.rib.bmp]
host = "127.0.0.1"
port = 11019
keep = "30s"
[agent.control]
socket = "$work/rfm.sock"
EOF
ip netns exec "$A" "$work/rfm" agent -c "$work/rfm.toml" >"$work/rfm.log" 2>&1 &
agent=$!
pids+=($agent)

metrics() { ip netns exec "$A" curl -sS --max-time 5 http://127.0.0.1:9669/metrics; }
for _ in $(seq 100); do
	metrics 2>/dev/null | grep -q "^rfm_interface_attached{ifname=\"$DEVA\"} 1" && break
	sleep 0.2
done
metrics | grep -q "^rfm_interface_attached{ifname=\"$DEVA\"} 1" || {
	echo "soak: agent did not attach" >&2
	cat "$work/rfm.log" >&2
	exit 1
}

ip netns exec "$A" gobgpd -f "$work/gobgpd.toml" --api-hosts 127.0.0.1:50051 --pprof-disable -l warn >"$work/gobgpd.log" 2>&1 &
pids+=($!)
gobgp() { ip netns exec "$A" gobgp -u 127.0.0.1 -p 50051 "$@"; }
for _ in $(seq 50); do gobgp global >/dev/null 2>&1 && break; sleep 0.2; done
echo "soak: announcing 500 routes"
for i in $(seq 0 499); do
	gobgp global rib add -a ipv4 "198.19.$((i / 2)).$(((i % 2) * 128))/25" nexthop 198.18.0.2 aspath 64501 >/dev/null
done

# Traffic. The churn sink binds the port so no ICMP comes back.
ip netns exec "$B" iperf3 -s -p 5201 -D -I "$work/iperf1.pid"
ip netns exec "$B" iperf3 -s -p 5202 -D -I "$work/iperf2.pid"
ip netns exec "$B" python3 -c '
import socket, sys
s = [socket.socket(f, socket.SOCK_DGRAM) for f in (socket.AF_INET, socket.AF_INET6)]
s[0].bind(("198.18.0.2", 5001)); s[1].bind(("2001:db8:50a::2", 5001))
import select
while True:
    for r in select.select(s, [], [])[0]: r.recv(65535)
' &
pids+=($!)
ip netns exec "$A" iperf3 -c "$B4" -p 5201 -u -b 20M -l 200 -t "$secs" >/dev/null 2>&1 &
pids+=($!)
ip netns exec "$A" iperf3 -c "$B4" -p 5202 -b 10M -t "$secs" >/dev/null 2>&1 &
pids+=($!)
# Churn: bash opens a new socket (a new source port, a new flow) for
# every redirection.
ip netns exec "$A" bash -c "while :; do for i in \$(seq 50); do
	echo -n churn >/dev/udp/$B4/5001; echo -n churn >/dev/udp/$B6/5001; done; sleep 0.1; done" 2>/dev/null &
pids+=($!)
# Route churn: 20 routes withdrawn and re-announced per cycle.
(while :; do
	for i in $(seq 0 19); do gobgp global rib del -a ipv4 "198.19.$i.0/25" >/dev/null 2>&1 || true; done
	sleep 2
	for i in $(seq 0 19); do gobgp global rib add -a ipv4 "198.19.$i.0/25" nexthop 198.18.0.2 aspath 64501 >/dev/null 2>&1 || true; done
	sleep 2
done) &
pids+=($!)

value() { # metric name (sum of all series)
	awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%.0f", s }' <<<"$2"
}
echo "elapsed_s,rss_kib,goroutines,open_fds,ring_drops,active_flows,rib_routes,ipfix_records" >"$RESULTS"
echo "soak: sampling every ${INTERVAL}s for ${secs}s into $RESULTS"
start=$(date +%s)
while :; do
	now=$(date +%s)
	elapsed=$((now - start))
	if ! kill -0 "$agent" 2>/dev/null; then
		echo "soak: agent exited" >&2
		cat "$work/rfm.log" >&2
		exit 1
	fi
	m=$(metrics)
	rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$agent/status")
	fds=$(ls "/proc/$agent/fd" | wc -l)
	row="$elapsed,$rss,$(value go_goroutines "$m"),$fds,$(value rfm_collector_dropped_events_total "$m")"
	row="$row,$(value rfm_collector_active_flows "$m"),$(value rfm_rib_routes "$m"),$(value rfm_ipfix_records_total "$m")"
	echo "$row" >>"$RESULTS"
	echo "soak: $row"
	((elapsed >= secs)) && break
	sleep "$INTERVAL"
done

gnuplot -e "results='$RESULTS'; out='$PLOT'" bench/soak-plot.gp
echo "soak: plot in $PLOT"
