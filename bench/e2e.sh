#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# End-to-end load test of the real agent at sample_rate = 1. Needs root.
#
# Two network namespaces joined by a veth (GRO/GSO/TSO off, no ARP, no
# IPv6 chatter). The agent runs in the receiving namespace attached to its
# veth end; bench/sender offers stepped UDP rates (sendmmsg batches of 64,
# 4096 distinct 5-tuples from 198.18.0.0/16) from the other namespace. For
# every step: offered and achieved packets/s, the kernel's rx counter of
# the veth, rfm's rfm_interface_rx_packets_total, ring-buffer drops
# (rfm_collector_dropped_events_total) and the agent's CPU time.
#
# Usage: sudo bench/e2e.sh            (writes bench/e2e-results.txt)
# Environment: RATES (steps: pps, 0 = as fast as possible, /W = W sending
# threads splitting the rate), DURATION (s per step),
# RINGS (ring_buf_size values), RUNS, SENDER_CPU (taskset list for the
# sender; empty = unpinned), RESULTS (output file).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

RATES=${RATES:-"50000 100000 150000 200000 250000 300000 0 350000/2 0/2"}
DURATION=${DURATION:-5}
RINGS=${RINGS:-"262144 1048576"}
RUNS=${RUNS:-2}
SENDER_CPU=${SENDER_CPU-}
RESULTS=${RESULTS:-bench/e2e-results.txt}
FLOWS=${FLOWS:-4096}

sender_lab e2e 9669

# rfm_rx: rfm_interface_rx_packets_total of DEVB summed over families;
# drops: rfm_collector_dropped_events_total.
rfm_counts() {
	scrape | awk -v dev="$DEVB" '
		/^rfm_interface_rx_packets_total\{/ && index($0, "ifname=\"" dev "\"") { rx += $NF }
		/^rfm_collector_dropped_events_total / { drops = $NF }
		END { printf "%.0f %.0f\n", rx, drops }'
}
kernel_rx() { ip netns exec "$NSB" cat "/sys/class/net/$DEVB/statistics/rx_packets"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$AGENT_PID/stat"; }
# Whole machine: busy ticks (all but idle and iowait) and softirq ticks.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $8 }' /proc/stat; }
CLK_TCK=$(getconf CLK_TCK)

start_e2e_agent() {
	local ring=$1
	lab_agent "$ring"
	for _ in $(seq 100); do
		if scrape 2>/dev/null | grep -q "^rfm_interface_attached{ifname=\"$DEVB\"} 1"; then
			return 0
		fi
		kill -0 "$AGENT_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "e2e.sh: agent did not attach to $DEVB:" >&2
	cat "$TMP/agent.log" >&2
	exit 1
}

stop_agent() {
	kill "$AGENT_PID"
	wait "$AGENT_PID" || true
	AGENT_PID=
}

run_steps() {
	local ring=$1 run=$2 best=0 clean=0 clean_so_far=1
	printf '\n## ring_buf_size = %d (%d KiB), run %d, sender CPU %s\n' "$ring" $((ring / 1024)) "$run" "${SENDER_CPU:-unpinned}"
	printf '%12s %12s %12s %12s %9s %11s %10s %14s %9s %9s %9s\n' \
		offered_pps achieved_pps kernel_rx rfm_rx rfm-kern ring_drops agent_cpu_s cpu_s_per_Mpkt sender_s softirq_s busy_s
	for step in $RATES; do
		rate=${step%/*} workers=1
		[[ $step == */* ]] && workers=${step#*/}
		read -r rx0 drop0 < <(rfm_counts)
		read -r busy0 soft0 < <(machine_ticks)
		k0=$(kernel_rx) c0=$(cpu_ticks)
		if [[ -n $SENDER_CPU ]]; then
			out=$(ip netns exec "$NSA" taskset -c "$SENDER_CPU" "$TMP/sender" -dst "$ADDRB:9" -rate "$rate" -workers "$workers" -duration "${DURATION}s" -flows "$FLOWS")
		else
			out=$(ip netns exec "$NSA" "$TMP/sender" -dst "$ADDRB:9" -rate "$rate" -workers "$workers" -duration "${DURATION}s" -flows "$FLOWS")
		fi
		# The consumer wakes at 1/8 ring fill or every 20 ms; give it time
		# to drain what the last batches left before reading its CPU.
		sleep 0.5
		read -r rx1 drop1 < <(rfm_counts)
		read -r busy1 soft1 < <(machine_ticks)
		k1=$(kernel_rx) c1=$(cpu_ticks)
		pps=$(sed -n 's/.*pps=\([0-9]*\).*/\1/p' <<<"$out")
		scpu=$(sed -n 's/.*cpu=\([0-9.]*\).*/\1/p' <<<"$out")
		busy=$(awk -v t=$((busy1 - busy0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
		soft=$(awk -v t=$((soft1 - soft0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
		krx=$((k1 - k0)) rrx=$((rx1 - rx0)) drops=$((drop1 - drop0))
		cpu=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
		perm=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$krx" 'BEGIN { if (n > 0) printf "%.2f", t / hz / (n / 1e6); else print "-" }')
		label=$rate
		[[ $rate == 0 ]] && label=max
		[[ $workers != 1 ]] && label="$label/$workers"
		printf '%12s %12s %12s %12s %9s %11s %10s %14s %9s %9s %9s\n' \
			"$label" "$pps" "$krx" "$rrx" $((rrx - krx)) "$drops" "$cpu" "$perm" "$scpu" "$soft" "$busy"
		if [[ $drops == 0 && $pps -gt $best ]]; then
			best=$pps
		fi
		if [[ $drops != 0 ]]; then
			clean_so_far=0
		elif [[ $clean_so_far == 1 && $pps -gt $clean ]]; then
			clean=$pps
		fi
	done
	printf 'zero ring drops at every step up to: %s pps; highest step with zero ring drops: %s pps\n' "$clean" "$best"
}

{
	echo "# rfm end-to-end benchmark (bench/e2e.sh), sample_rate = 1"
	echo "# date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "# cpu:     $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs online"
	echo "# kernel:  $(uname -r)"
	echo "# go:      $(go version | awk '{ print $3 }')"
	echo "# commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
	echo "# load:    loadavg before start: $(cut -d' ' -f1-3 /proc/loadavg) (machine shared with other engineers)"
	echo "# traffic: $FLOWS flows, 64-byte frames (IPv4/UDP), sendmmsg batches of 64, ${DURATION}s per step,"
	echo "#          veth with GRO/GSO/TSO off; sender, agent and softirq share the CPUs"
	echo "# columns: offered_pps = rate asked of the sender (max = unlimited; /2 = two sending threads);"
	echo "#          achieved_pps = what it sent;"
	echo "#          kernel_rx = veth rx_packets delta; rfm_rx = rfm_interface_rx_packets_total delta;"
	echo "#          ring_drops = rfm_collector_dropped_events_total delta; agent_cpu_s = utime+stime delta"
	echo "#          (incl. 0.5 s drain after each step); cpu_s_per_Mpkt = agent CPU seconds per 10^6 packets;"
	echo "#          sender_s = the sender's own CPU time, which includes the kernel transmit and veth"
	echo "#          receive work done inside its sendmmsg calls; softirq_s and busy_s are tick-sampled"
	echo "#          /proc/stat totals for the whole machine (2 CPUs, so at most 2 x (step + 0.5 s)),"
	echo "#          other engineers' processes included: busy_s near the maximum means a contended step."
	for run in $(seq "$RUNS"); do
		for ring in $RINGS; do
			start_e2e_agent "$ring"
			run_steps "$ring" "$run"
			stop_agent
		done
	done
} | tee "$RESULTS"
