#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# Churn as issue #18 specifies it, needs root, about 2 minutes: the real
# agent with interfaces = ["*"] in a namespace while RATE veth pairs a
# second are created and deleted (each lives LIFETIME seconds) for
# DURATION seconds, next to KEEP long-lived pairs carrying PPS packets a
# second each. Sampled every second: interfaces that exist against
# interfaces /metrics lists as attached. At the end, against the start:
# the agent's fds by kind, the kernel's BPF links/programs/maps (its own
# listings, bench/bpfstate) and the TCX programs on the long-lived
# interfaces (BPF_PROG_QUERY), goroutines, anonymous memory, the
# long-lived interfaces' counters against the kernel's veth counters,
# and that no series of a deleted interface is left.
# Writes bench/churn-results.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
if [[ $(id -u) != 0 ]]; then
	echo "bench/churn.sh: needs root (network namespaces, BPF)" >&2
	exit 1
fi
RATE=${RATE:-100} DURATION=${DURATION:-60} LIFETIME=${LIFETIME:-5}
KEEP=${KEEP:-4} PPS=${PPS:-2000} SETTLE=${SETTLE:-30}
# PROFILES=DIR: run the agent with RFM_PPROF=1 and save its heap profile
# at the start, the end and SETTLE s later as DIR/heap-{start,end,late}.pb.gz.
PROFILES=${PROFILES:-}
out=${OUT:-bench/churn-results.txt}
PORT=9671
NSA=rfmch-a-$$ NSB=rfmch-b-$$
TMP=$(mktemp -d /tmp/rfm-churn.XXXXXX)
AGENT_PID= SAMPLER_PID=
SENDERS=()
cleanup() {
	[[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null || true
	for p in "${SENDERS[@]}"; do kill "$p" 2>/dev/null || true; done
	[[ -n $AGENT_PID ]] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
	[[ -n $PROFILES && -f $TMP/agent.log ]] && cp "$TMP/agent.log" "$PROFILES/" || true
	ip netns del "$NSA" 2>/dev/null || true
	ip netns del "$NSB" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

echo "building agent, sender and bpfstate" >&2
CGO_ENABLED=0 go build -o "$TMP/rfm" ./cmd/rfm
go build -o "$TMP/sender" ./bench/sender
go build -o "$TMP/bpfstate" ./bench/bpfstate

# Long-lived pair i: la<i> in NSA (198.19.i.1) sends to lb<i> in NSB
# (198.19.i.2), the agent's side.
keep=()
for ((i = 0; i < KEEP; i++)); do
	mac_a=$(printf '02:00:00:c4:00:%02x' $((2 * i))) mac_b=$(printf '02:00:00:c4:00:%02x' $((2 * i + 1)))
	if ((i == 0)); then
		netns_pair "$NSA" la0 "$mac_a" "$NSB" lb0 "$mac_b"
	else
		ip -n "$NSA" link add "la$i" address "$mac_a" type veth peer name "lb$i" netns "$NSB" address "$mac_b"
	fi
	veth_end "$NSA" "la$i" "$mac_b" "198.19.$i.1/24" "198.19.$i.2"
	veth_end "$NSB" "lb$i" "$mac_a" "198.19.$i.2/24" "198.19.$i.1"
	keep+=("lb$i")
done

[[ -n $PROFILES ]] && mkdir -p "$PROFILES" && export RFM_PPROF=1
start_agent '["*"]'

scrape() { ip netns exec "$NSB" curl -sf "http://127.0.0.1:$PORT/metrics"; }
attached_names() { scrape | sed -n 's/^rfm_interface_attached{ifname="\([^"]*\)".* 1$/\1/p'; }
# metric NAME IFNAME: the sum over the series of NAME for IFNAME.
metric() { scrape | awk -v n="$1" -v i="ifname=\"$2\"" '$1 ~ "^"n"[{ ]" && index($1, i) { s += $NF } END { printf "%d\n", s }'; }
gauge() { scrape | awk -v n="$1" '$1 == n { printf "%d\n", $2 }'; }
rss_anon_kb() { awk '/^RssAnon:/ { print $2 }' "/proc/$AGENT_PID/status"; }
kstat() { ip netns exec "$NSB" cat "/sys/class/net/$1/statistics/$2"; }
fd_kinds() {
	local fd t
	for fd in /proc/"$AGENT_PID"/fd/*; do
		t=$(readlink "$fd" 2>/dev/null) || continue
		case $t in
		anon_inode:bpf-map) echo bpf-map ;; anon_inode:bpf-prog) echo bpf-prog ;;
		anon_inode:bpf_link) echo bpf-link ;; socket:*) echo socket ;; *) echo other ;;
		esac
	done | sort | uniq -c | awk '{ printf "%s=%s ", $2, $1; t += $1 } END { printf "total=%d\n", t }'
}
# state prints everything compared between start and end, one per line.
state() {
	echo "agent-fds $(fd_kinds)"
	ip netns exec "$NSB" "$TMP/bpfstate" -pid "$AGENT_PID" "${keep[@]}"
	echo "go_goroutines $(gauge go_goroutines)"
	echo "rfm_memory_anonymous_bytes $(gauge rfm_memory_anonymous_bytes)"
	echo "RssAnon-kB $(rss_anon_kb)"
	echo "go_memstats_heap_inuse_bytes $(gauge go_memstats_heap_inuse_bytes)"
	echo "go_memstats_heap_idle_bytes $(gauge go_memstats_heap_idle_bytes)"
	echo "go_memstats_heap_released_bytes $(gauge go_memstats_heap_released_bytes)"
	echo "go_memstats_next_gc_bytes $(gauge go_memstats_next_gc_bytes)"
	if [[ -n $PROFILES ]]; then # live heap (after a GC) as pprof has it
		ip netns exec "$NSB" curl -sf -o "$PROFILES/heap-$1.pb.gz" "http://127.0.0.1:$PORT/debug/pprof/heap?gc=1"
	fi
	echo "links-in-agent-netns $(ip -n "$NSB" -o link show | wc -l)"
	echo "links-in-peer-netns $(ip -n "$NSA" -o link show | wc -l)"
}

wait_attached_exactly() { # the long-lived interfaces and nothing else, within 60 s
	local want got deadline=$((SECONDS + 60))
	want=$(printf '%s\n' "${keep[@]}" | sort)
	while ((SECONDS < deadline)); do
		got=$(attached_names 2>/dev/null | sort) || true
		[[ $got == "$want" ]] && return 0
		sleep 0.2
	done
	echo "attached after 60 s: $(echo $got)" >&2
	return 1
}
wait_attached_exactly

start_state=$(state start)
declare -A k0_rx k0_tx a0_rx a0_tx k0_rxb a0_rxb
for d in "${keep[@]}"; do
	k0_rx[$d]=$(kstat "$d" rx_packets) k0_tx[$d]=$(kstat "$d" tx_packets) k0_rxb[$d]=$(kstat "$d" rx_bytes)
	a0_rx[$d]=$(metric rfm_interface_rx_packets_total "$d") a0_tx[$d]=$(metric rfm_interface_tx_packets_total "$d")
	a0_rxb[$d]=$(metric rfm_interface_rx_bytes_total "$d")
done

# Traffic on the long-lived pairs for the whole churn and a little more.
for ((i = 0; i < KEEP; i++)); do
	ip netns exec "$NSA" "$TMP/sender" -dst "198.19.$i.2:9" -rate "$PPS" -flows 16 -duration "$((DURATION + LIFETIME + 2))s" >"$TMP/sender$i.log" 2>&1 &
	SENDERS+=($!)
done

# Sampler: every second, the churn interfaces that existed both before
# and after a scrape and were not listed as attached in it (not yet
# attached); the attached names are kept to find any never seen.
churn_links() { ip -n "$NSB" -o link show 2>/dev/null | sed -n 's/^[0-9]*: \(cb[^@:]*\)[@:].*/\1/p' | sort; }
(
	while :; do
		t=$(date +%s.%N)
		churn_links >"$TMP/before"
		scrape >"$TMP/scrape" 2>/dev/null || { sleep 1; continue; }
		churn_links >"$TMP/after"
		sed -n 's/^rfm_interface_attached{ifname="\(cb[^"]*\)".* 1$/\1/p' "$TMP/scrape" | sort >"$TMP/att"
		cat "$TMP/att" >>"$TMP/seen"
		notyet=$(comm -12 "$TMP/before" "$TMP/after" | comm -23 - "$TMP/att" | wc -l)
		echo "$t $(wc -l <"$TMP/before") $(wc -l <"$TMP/att") $notyet $(awk '/^RssAnon:/ { print $2 }' "/proc/$AGENT_PID/status")" >>"$TMP/samples"
		pause=$(echo "$t + 1 - $(date +%s.%N)" | bc -l)
		[[ $pause == -* ]] || sleep "$pause"
	done
) &
SAMPLER_PID=$!

# Batch k creates pairs ca<k>_<j> (NSA) / cb<k>_<j> (NSB), the NSA ends
# in link group k+1, and deletes batch k-LIFETIME by its group: one
# request, one batch in the kernel, as when a pod's namespace goes away
# (deleting 100 veths one request each takes about 1.8 s here; deleting
# one end of a veth deletes both).
create_batch() {
	local k=$1 j
	for ((j = 0; j < RATE; j++)); do
		echo "link add ca${k}_$j group $((k + 1)) type veth peer name cb${k}_$j netns $NSB"
		echo "link set ca${k}_$j up"
	done | ip -n "$NSA" -batch -
	for ((j = 0; j < RATE; j++)); do echo "link set cb${k}_$j up"; done | ip -n "$NSB" -batch -
}
delete_batch() { ip -n "$NSA" link del group $(($1 + 1)); }
# After creating batch k, /metrics is polled every 50 ms until it lists
# all of the batch as attached (at most until the next second starts):
# the batch's attach lag, counted from the end of its creation and
# including a scrape.
batch_attached() { scrape | grep -cE "^rfm_interface_attached\{ifname=\"cb${1}_[0-9]+\"\} 1$" || true; }
late=0 worst_op=0
: >"$TMP/lags"
churn_start=$(date +%s.%N)
for ((k = 0; k < DURATION; k++)); do
	op_start=$(date +%s%N)
	create_batch "$k"
	created=$(date +%s%N)
	deadline=$(echo "($churn_start + $k + 0.9) * 1000000000" | bc -l)
	deadline=${deadline%.*}
	while :; do
		if (($(batch_attached "$k") == RATE)); then
			echo "$k $((($(date +%s%N) - created) / 1000000)) $(((created - op_start) / 1000000))" >>"$TMP/lags"
			break
		fi
		if (($(date +%s%N) > deadline)); then
			echo "$k late $(((created - op_start) / 1000000))" >>"$TMP/lags"
			break
		fi
		sleep 0.05
	done
	((k >= LIFETIME)) && delete_batch $((k - LIFETIME))
	op_ms=$((($(date +%s%N) - op_start) / 1000000))
	((op_ms > worst_op)) && worst_op=$op_ms
	# Pace to one batch a second from the start; count seconds missed.
	now=$(date +%s.%N)
	wait_s=$(echo "$churn_start + $k + 1 - $now" | bc -l)
	if [[ $wait_s == -* ]]; then late=$((late + 1)); else sleep "$wait_s"; fi
done
for ((k = DURATION - LIFETIME; k < DURATION; k++)); do ((k >= 0)) && delete_batch "$k"; done
churn_s=$(echo "$(date +%s.%N) - $churn_start" | bc -l)
del_done=$(date +%s%N)
wait_attached_exactly
detach_ms=$((($(date +%s%N) - del_done) / 1000000))
for p in "${SENDERS[@]}"; do wait "$p" || true; done
SENDERS=()
kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=
sleep 2 # the last packets' counters, and a quiet agent
end_state=$(state end)
sleep "$SETTLE"
late_state=$(state late)

{
	echo "# bench/churn.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $(go version | cut -d' ' -f3), commit $(git rev-parse --short HEAD)"
	echo "# cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs (shared with other jobs)"
	echo "# $RATE veth pairs created and $RATE deleted per second for $DURATION s (each lives $LIFETIME s, one end in the agent's namespace),"
	echo "# $KEEP long-lived pairs carrying $PPS packets/s each; agent: interfaces = [\"*\"], defaults otherwise"
	echo
	echo "## Churn"
	echo "pairs created and deleted: $((RATE * DURATION)) each, in ${churn_s%.*} s (seconds where a batch overran its second: $late; slowest create+delete batch: $worst_op ms)"
	echo "creating one batch of $RATE pairs (ip -batch, both ends up): median $(awk '{ print $3 }' "$TMP/lags" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }') ms, max $(awk '{ print $3 }' "$TMP/lags" | sort -n | tail -1) ms"
	echo "batch attach lag (end of creation until /metrics lists all $RATE attached, polled every 50 ms):"
	awk '$2 != "late" { print $2 }' "$TMP/lags" | sort -n | awk -v late="$(grep -c ' late ' "$TMP/lags" || true)" '{ a[NR] = $1 } END { printf "  min %d ms, median %d ms, p90 %d ms, max %d ms over %d batches; %d batches not all attached within the second\n", a[1], a[int((NR + 1) / 2)], a[int(NR * 0.9 + 0.5)], a[NR], NR, late }'
	echo "churn interfaces ever seen attached in the 1 s samples: $(sort -u "$TMP/seen" | wc -l) of $((RATE * DURATION))"
	echo "after the last delete, back to exactly the $KEEP long-lived interfaces attached in: $detach_ms ms"
	echo
	echo "## Per 1 s sample: churn interfaces existing in the agent's namespace, listed attached, and existing before and after the scrape but not listed attached"
	awk -v t0="$churn_start" '{ gap = $4; printf "t=%5.1fs exist=%4d attached=%4d not-yet=%4d RssAnon=%s kB\n", $1 - t0, $2, $3, gap, $5; if (gap > max) max = gap; sum += gap; n++ } END { printf "not yet attached: max %d, mean %.1f over %d samples \n", max, sum / n, n }' "$TMP/samples"
	echo
	echo "## Long-lived interfaces: agent counter deltas against the kernel's veth counters"
	for d in "${keep[@]}"; do
		krx=$(($(kstat "$d" rx_packets) - k0_rx[$d])) ktx=$(($(kstat "$d" tx_packets) - k0_tx[$d]))
		krxb=$(($(kstat "$d" rx_bytes) - k0_rxb[$d]))
		arx=$(($(metric rfm_interface_rx_packets_total "$d") - a0_rx[$d])) atx=$(($(metric rfm_interface_tx_packets_total "$d") - a0_tx[$d]))
		arxb=$(($(metric rfm_interface_rx_bytes_total "$d") - a0_rxb[$d]))
		verdict=exact
		[[ $krx == "$arx" && $ktx == "$atx" && $krxb == "$arxb" ]] || verdict=DIFFERENT
		echo "$d: rx packets kernel $krx agent $arx; rx bytes kernel $krxb agent $arxb; tx packets kernel $ktx agent $atx: $verdict"
	done
	echo
	echo "## Series of deleted interfaces left in /metrics"
	echo "lines with ifname=\"cb...\": $(scrape | grep -c 'ifname="cb' || true)"
	echo
	echo "## State: start, end (2 s after the churn), and $SETTLE s later"
	echo "# kernel-links/progs/maps count the whole kernel (other jobs' BPF objects too); agent-* and tcx-* are the agent's own"
	paste -d'|' <(echo "$start_state") <(echo "$end_state") <(echo "$late_state") |
		awk -F'|' '{ printf "start: %s\n  end: %s\n  late: %s\n", $1, $2, $3 }'
	echo
	echo "## Agent log (warnings and errors)"
	grep -ciE 'level=(warn|error)' "$TMP/agent.log" | sed 's/^/lines: /' || true
	grep -iE 'level=(warn|error)' "$TMP/agent.log" | cut -c1-200 | sort | uniq -c | sort -rn | head -5 || true
} | tee "$out"
