#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# A Kubernetes node's worth of interfaces (issue #18), needs root, a few
# minutes on 2 cores. Writes bench/scale-results.txt:
#   1. per-packet cost of the unsampled path, this tree against BASE
#      (default: the commit before the shared programs), interleaved in
#      one run next to the floor;
#   2. attaching, reading the counters of and detaching 2,000 veth
#      interfaces (BenchmarkAttach, datapath only);
#   3. serving /metrics with 2,000 interfaces and 65,536 flows
#      (BenchmarkScrapeInterfaces);
#   4. the real agent with 2,000 interfaces appearing at once, twice,
#      next to 4 that stay (test/scale with RFM_SCALE_BATCH=2000):
#      attach time, scrape time, memory, and the leak checks.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) != 0 ]]; then
	echo "bench/scale.sh: needs root (loads BPF programs, creates namespaces)" >&2
	exit 1
fi
base=${BASE:-5736289}
out=bench/scale-results.txt
old=$(mktemp -d /tmp/rfm-scale-base.XXXXXX)
trap 'git worktree remove --force "$old" >/dev/null 2>&1 || rm -rf "$old"' EXIT
git worktree add --detach "$old" "$base" >/dev/null 2>&1

filter='Datapath/(floor|rate=0)$'
{
	echo "# bench/scale.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $(go version | cut -d' ' -f3)"
	echo "# cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs"
	echo
	echo "## 1. Unsampled per-packet cost (ns/pkt and over the floor), base $base and this tree, alternating"
	for round in 1 2 3; do
		for tree in "$old" .; do
			label=new
			[[ $tree == "$old" ]] && label="base"
			echo "# round $round: $label"
			(cd "$tree" && go test -run '^$' -bench "$filter" -benchtime 1000000x ./internal/datapath) |
				grep '^Benchmark' | awk '{ printf "%-45s %s ns/pkt %s over-floor-ns\n", $1, $5, $7 }'
		done
	done
	echo
	echo "## 2. BenchmarkAttach: 1,000 veth pairs (2,000 interfaces) in one namespace, datapath only"
	go test -run '^$' -bench 'Attach$' -benchtime 1x -count 3 ./internal/datapath | grep '^Benchmark'
	echo
	echo "## 3. BenchmarkScrapeInterfaces: /metrics with 2,000 interfaces (counters precomputed)"
	go test -run '^$' -bench 'ScrapeInterfaces' -count 3 ./internal/export/prom | grep '^Benchmark'
	echo
	echo "## 4. test/scale TestChurn, RFM_SCALE_CHURN=4000 RFM_SCALE_BATCH=2000 (the real agent)"
	RFM_SCALE_CHURN=4000 RFM_SCALE_BATCH=2000 go test -count=1 -v -timeout 20m ./test/scale |
		grep -E 'churn_test.go|^(--- |ok|FAIL)'
} | tee "$out"
