#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# End to end on veth native XDP: bench/sender floods UDP (64-byte frames,
# 4096 5-tuples from 198.18.0.0/16) at the agent's veth end, where an XDP
# rule drops everything to port 9. For each step: what was sent, what
# rfm counted (rfm_interface_rx_packets_total), what XDP dropped
# (rfm_xdp_packets_total), and what escaped to the IP stack (the
# receiving namespace's Ip InReceives). Needs root.
#
# Usage: sudo bench/xdp-e2e.sh    (writes bench/xdp-e2e-results.txt)
# Environment: STEPS (workers per step, as fast as they can), DURATION (s).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

STEPS=${STEPS:-"1 2 1 2"}
DURATION=${DURATION:-5}
RESULTS=${RESULTS:-bench/xdp-e2e-results.txt}

sender_lab xdpe2e 9671
start_agent "[\"$DEVB\"]" "sample_rate = 100
[agent.xdp]
interfaces = [\"$DEVB\"]
mode = \"native\"
state_file = \"$TMP/blocklist.json\"
[[agent.xdp.rules]]
name = \"flood\"
action = \"drop\"
proto = \"udp\"
dst_ports = [\"9\"]"
for _ in $(seq 100); do
	scrape 2>/dev/null | grep -q "^rfm_xdp_attached{ifname=\"$DEVB\",mode=\"native\"} 1" && break
	kill -0 "$AGENT_PID" 2>/dev/null || { cat "$TMP/agent.log" >&2; exit 1; }
	sleep 0.1
done

counts() {
	scrape | awk -v dev="$DEVB" '
		/^rfm_interface_rx_packets_total\{/ && index($0, "ifname=\"" dev "\"") { rx += $NF }
		/^rfm_xdp_packets_total\{/ && index($0, "action=\"drop\"") { drop += $NF }
		END { printf "%.0f %.0f\n", rx, drop }'
}
ip_in() { ip netns exec "$NSB" awk '/^Ip: [0-9]/ { print $3 }' /proc/net/snmp; }
# Frames the sending veth end dropped because the receiving end's queue
# was full: they never arrived, so nobody can count them.
veth_drop() { ip netns exec "$NSA" cat "/sys/class/net/$DEVA/statistics/tx_dropped"; }

{
	echo "# rfm XDP end to end (bench/xdp-e2e.sh): drop everything to UDP port 9 on veth native XDP"
	echo "# date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "# cpu:     $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs online"
	echo "# kernel:  $(uname -r)"
	echo "# commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
	echo "# load:    loadavg before start: $(cut -d' ' -f1-3 /proc/loadavg) (machine shared with other engineers)"
	echo "# columns: sent/achieved_pps from the sender; rfm_rx and xdp_drops are rfm's counter deltas;"
	echo "#          veth_drop = tx_dropped of the sending veth end (its peer's queue was full: never arrived);"
	echo "#          escaped = Ip InReceives delta in the receiving namespace (packets that reached the stack)"
	printf '%8s %12s %12s %10s %12s %12s %8s\n' workers sent achieved_pps veth_drop rfm_rx xdp_drops escaped
	for w in $STEPS; do
		read -r rx0 d0 < <(counts)
		i0=$(ip_in) v0=$(veth_drop)
		out=$(ip netns exec "$NSA" "$TMP/sender" -dst "$ADDRB:9" -rate 0 -workers "$w" -duration "${DURATION}s")
		sleep 0.5
		read -r rx1 d1 < <(counts)
		i1=$(ip_in) v1=$(veth_drop)
		sent=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' <<<"$out")
		pps=$(sed -n 's/.*pps=\([0-9]*\).*/\1/p' <<<"$out")
		printf '%8s %12s %12s %10s %12s %12s %8s\n' "$w" "$sent" "$pps" $((v1 - v0)) $((rx1 - rx0)) $((d1 - d0)) $((i1 - i0))
	done
} | tee "$RESULTS"
