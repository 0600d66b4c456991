#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# Memory of the real agent, as the machine pays for it. Needs root.
#
# The agent runs in a namespace on one end of a veth at sample_rate = 1
# with the default max_flows (65,536) and ring_buf_size (256 KiB). Read
# from /proc/PID of the agent, the way its rfm_memory_* metrics are:
#   anonymous  RssAnon: Go heap, stacks, runtime (only swap reclaims it)
#   bpf_locked memlock of the BPF maps it holds open, once per map id
#              (kernel memory, charged to its cgroup, never reclaimed)
#   file       RssFile without its mappings of BPF maps (the ring buffer
#              is mapped twice; its pages are in bpf_locked): clean pages
#              of the binary, which the page cache keeps anyway
# at five points: idle before any scrape, idle after 3 and after 60
# scrapes (Prometheus scrapes for as long as the agent runs, and each
# scrape allocates: the 60-scrape figure is the one that lasts; these
# ask for gzip as Prometheus does, which costs the agent a compressor), with
# 65,536 active flows (bench/sender, 100k packets/s for 3 s), and with
# them after 20 more scrapes. The agent's own metrics are read after each
# and must agree.
#
# Usage: sudo bench/memory.sh          (writes bench/memory-results.txt)
# Environment: RESULTS (output file), RUNS (agent starts, default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

RESULTS=${RESULTS:-bench/memory-results.txt}
RUNS=${RUNS:-3}
FLOWS=65536

sender_lab mem 9670

value() { awk -v m="$1" '$1 == m { printf "%.0f\n", $2 }' <<<"$2"; }
kib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1024 }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
# prom_scrape fetches /metrics as Prometheus does, gzip-compressed.
prom_scrape() { ip netns exec "$NSB" curl -sf --compressed -H 'Accept-Encoding: gzip' "http://127.0.0.1:$PORT/metrics"; }

# measure prints "vmrss anonymous bpf_locked file" in bytes for the agent,
# from /proc like internal/agent/memory.go, without touching the agent.
measure() {
	local p=/proc/$AGENT_PID fd target id memlock vmrss anon file mapped locked=0
	declare -A seen=()
	read -r vmrss anon file < <(awk '
		/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 }
		END { print r * 1024, a * 1024, f * 1024 }' "$p/status")
	mapped=$(awk '
		/^[0-9a-f]+-[0-9a-f]+ / { bpf = ($6 == "anon_inode:bpf-map") }
		bpf && /^Rss:/ { s += $2 }
		END { print s * 1024 }' "$p/smaps")
	for fd in "$p"/fd/*; do
		target=$(readlink "$fd" 2>/dev/null) || continue
		[[ $target == anon_inode:bpf-map ]] || continue
		read -r id memlock < <(awk '/^map_id:/ { i = $2 } /^memlock:/ { m = $2 } END { print i, m }' "$p/fdinfo/${fd##*/}")
		[[ -n ${seen[$id]:-} ]] && continue
		seen[$id]=1
		locked=$((locked + memlock))
	done
	echo "$vmrss $anon $locked $((file > mapped ? file - mapped : 0))"
}

row() {
	local label=$1 vmrss anon locked file m
	read -r vmrss anon locked file < <(measure)
	printf '%-28s %9s %9s %11s %9s %9s\n' "$label" "$(mib "$vmrss")" "$(mib "$anon")" "$(kib "$locked")" "$(mib "$file")" \
		"$(mib $((anon + locked)))"
	# The agent's own figures from one scrape just after (the scrape
	# itself allocates, so anonymous reads a little higher).
	m=$(scrape)
	printf '%-28s %9s %9s %11s %9s\n' "  its rfm_memory_* metrics" "" \
		"$(mib "$(value rfm_memory_anonymous_bytes "$m")")" "$(kib "$(value rfm_memory_bpf_locked_bytes "$m")")" \
		"$(mib "$(value rfm_memory_file_bytes "$m")")"
	# Where the anonymous memory is, from the Go runtime's view.
	# The metadata figure is what the runtime has mapped for itself, not
	# what is resident: most of it never is (the heap profiler's bucket
	# table alone is 1.4 MiB mapped and a few pages touched).
	printf '  Go: heap in use %s MiB, free heap kept from the OS %s MiB, stacks %s MiB, runtime metadata mapped %s MiB\n' \
		"$(mib "$(value go_memstats_heap_inuse_bytes "$m")")" \
		"$(mib $(($(value go_memstats_heap_idle_bytes "$m") - $(value go_memstats_heap_released_bytes "$m"))))" \
		"$(mib "$(value go_memstats_stack_inuse_bytes "$m")")" \
		"$(mib $(($(value go_memstats_mspan_inuse_bytes "$m") + $(value go_memstats_mcache_inuse_bytes "$m") + $(value go_memstats_buck_hash_sys_bytes "$m") + $(value go_memstats_gc_sys_bytes "$m") + $(value go_memstats_other_sys_bytes "$m"))))"
}

start_measured_agent() {
	lab_agent "" # the default ring_buf_size
	# Up once its metrics listener is: checked with ss, without
	# connecting, so the first measurement is of a never-scraped agent.
	for _ in $(seq 100); do
		if [[ -n $(ip netns exec "$NSB" ss -Hltn "sport = :$PORT") ]]; then
			break
		fi
		kill -0 "$AGENT_PID" 2>/dev/null || { cat "$TMP/agent.log" >&2; exit 1; }
		sleep 0.1
	done
	if [[ -z $(ip netns exec "$NSB" ss -Hltn "sport = :$PORT") ]]; then
		echo "memory.sh: agent did not come up:" >&2
		cat "$TMP/agent.log" >&2
		exit 1
	fi
	sleep 2 # a settled agent, not one in the middle of start-up
}

stop_agent() {
	kill "$AGENT_PID"
	wait "$AGENT_PID" || true
	AGENT_PID=
}

# Before tee truncates the results file, which would make the tree dirty.
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet -- . ":(exclude)$RESULTS" 2>/dev/null || echo ' (dirty tree)')"
{
	echo "# rfm memory (bench/memory.sh), CGO_ENABLED=0 build, sample_rate = 1,"
	echo "# default max_flows 65536 and ring_buf_size 262144, agent on one veth end"
	echo "# date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "# cpu:     $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs online"
	echo "# kernel:  $(uname -r)"
	echo "# go:      $(go version | awk '{ print $3 }'), GOGC ${GOGC:-unset (agent default 50)}"
	echo "# commit:  $COMMIT"
	echo "# binary:  $(stat -c %s "$TMP/rfm") bytes"
	echo "# columns (MiB, bpf_locked KiB): VmRSS; anonymous = RssAnon; bpf_locked = memlock of the"
	echo "#          agent's BPF maps; file = RssFile without mapped BPF maps; anon+bpf = what the agent"
	echo "#          costs the machine (file pages are clean pages of the binary, kept by the page cache)"
	echo "# scrapes: idle ones ask for gzip like Prometheus; each row's own metrics scrape is plain"
	echo "# Go:      the runtime's view from the same scrape (heap in use includes garbage not yet"
	echo "#          collected; the flow table is allocated as flows arrive)"
	for run in $(seq "$RUNS"); do
		echo
		echo "## run $run"
		printf '%-28s %9s %9s %11s %9s %9s\n' point VmRSS anonymous bpf_locked file anon+bpf
		start_measured_agent
		row "idle, never scraped"
		prom_scrape >/dev/null
		prom_scrape >/dev/null
		row "idle, scraped 3 times"
		for _ in $(seq 56); do prom_scrape >/dev/null; done
		row "idle, scraped 60 times"
		ip netns exec "$NSA" "$TMP/sender" -dst "$ADDRB:9" -rate 100000 -duration 3s -flows "$FLOWS" >/dev/null
		sleep 0.5 # the consumer drains what the last batches left
		row "after 65,536 flows sent"
		for _ in $(seq 19); do scrape >/dev/null; done
		row "65,536 flows, 20 scrapes"
		echo "# active flows: $(value rfm_collector_active_flows "$(scrape)")"
		stop_agent
	done
} | tee "$RESULTS"
