#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# Every benchmark of issue #5 and #4 in one command (needs root; about
# 15 minutes on a 2-core machine). Results go next to this script:
#   datapath-results.txt  BPF_PROG_TEST_RUN per-packet cost vs the floor
#   go-bench-results.txt  consumer, flow table, scrape, IPFIX, RIB, BMP
#   accuracy-results.txt  sampling accuracy and coverage
#   e2e-results.txt       end to end at sample_rate = 1 on a veth
#   memory-results.txt    the agent's anonymous, BPF locked and file memory
#   memory-floor-results.txt  the Go/client_golang floor under the idle figure
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) != 0 ]]; then
	echo "bench/all.sh: needs root (loads BPF programs, creates namespaces)" >&2
	exit 1
fi

echo "== datapath" >&2
bash bench/datapath.sh

echo "== Go benchmarks" >&2
{
	echo "# go test -bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $(go version | cut -d' ' -f3)"
	echo "# cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs"
	go test -run '^$' -bench . -benchmem -count "${COUNT:-3}" -timeout 60m \
		./internal/agent ./internal/flow ./internal/export/... ./internal/enrich/...
} | tee bench/go-bench-results.txt

echo "== XDP fast path" >&2
bash bench/xdp.sh > bench/xdp-results.txt
bash bench/xdp-e2e.sh

echo "== accuracy" >&2
bash bench/accuracy.sh

echo "== end to end" >&2
bash bench/e2e.sh

echo "== memory" >&2
bash bench/memory.sh
bash bench/memory-floor.sh
