#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# The floor under the agent's idle memory: RssAnon of bench/memfloor's
# minimal Go /metrics servers before any scrape and after 60 scrapes,
# plain and gzip-compressed (Prometheus always asks for gzip; the http
# mode never compresses, so it runs plain only), on loopback.
# bench/memory.sh measures the agent the same way; the difference is
# what rfm itself costs.
#
# Usage: bash bench/memory-floor.sh   (writes bench/memory-floor-results.txt)
# Environment: RUNS (starts per case, default 3), RESULTS, PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
RESULTS=${RESULTS:-bench/memory-floor-results.txt}
PORT=${PORT:-9691}
TMP=$(mktemp -d /tmp/rfm-memfloor.XXXXXX)
PID=
cleanup() {
	[[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

CGO_ENABLED=0 go build -o "$TMP/memfloor" ./bench/memfloor

rss_anon() { awk '/^RssAnon:/ { printf "%.2f", $2 / 1024 }' "/proc/$PID/status"; }
listening() { [[ -n $(ss -Hltn "sport = :$PORT") ]]; }

{
	echo "# bench/memory-floor.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), CGO_ENABLED=0, GOGC ${GOGC:-unset (50 as the agent)}"
	echo "# cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; kernel $(uname -r); $(go version | awk '{ print $3 }')"
	echo "# RssAnon MiB of the server before any scrape and after 60 scrapes"
	printf '%-14s %-6s %4s %8s %10s\n' mode scrape run idle after60
	for mode in http prom prom-runtime; do
		for enc in plain gzip; do
			[[ $mode == http && $enc == gzip ]] && continue # it never compresses
			for run in $(seq "$RUNS"); do
				"$TMP/memfloor" -mode "$mode" "127.0.0.1:$PORT" &
				PID=$!
				for _ in $(seq 100); do listening && break; sleep 0.1; done
				listening || { echo "memory-floor.sh: $mode did not come up" >&2; exit 1; }
				sleep 1 # settled, as bench/memory.sh waits for the agent
				idle=$(rss_anon)
				args=(-sf)
				[[ $enc == gzip ]] && args+=(--compressed -H 'Accept-Encoding: gzip')
				for _ in $(seq 60); do curl "${args[@]}" "http://127.0.0.1:$PORT/metrics" >/dev/null; done
				printf '%-14s %-6s %4s %8s %10s\n' "$mode" "$enc" "$run" "$idle" "$(rss_anon)"
				kill "$PID"
				wait "$PID" 2>/dev/null || true
				PID=
			done
		done
	done
} | tee "$RESULTS"
