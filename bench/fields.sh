#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# Cost of the optional fields (agent.bpf.fields, fib_lookup), side by side
# in one run: datapath ns/pkt with fields off, each alone and all on
# (BPF_PROG_TEST_RUN, sampled at rate 1 and unsampled), the flow table
# update at 64k flows and the consumer at 64k flows, off and all on.
# Needs root. Prints the minimum and median of COUNT runs per case.
set -euo pipefail
cd "$(dirname "$0")/.."
count="${COUNT:-5}"
out=$(mktemp)
go test -run x -bench DatapathFields -benchtime 100000x -count "$count" ./internal/datapath | tee "$out"
go test -run x -bench 'UpdateBatch/flows=65536' -count "$count" ./internal/flow | tee -a "$out"
go test -run x -bench 'Consumer/flows=65536' -benchtime 3x -count 3 ./internal/agent | tee -a "$out"
echo "== min / median per case"
awk '/^Benchmark/ {
	name = $1; v = ""
	for (i = 2; i < NF; i++) if ($(i+1) == "ns/pkt" || $(i+1) == "events/s") { v = $i; unit = $(i+1) }
	if (v != "") { vals[name] = vals[name] " " v; units[name] = unit }
}
END {
	for (n in vals) {
		k = split(substr(vals[n], 2), a, " ")
		for (i = 2; i <= k; i++) { # insertion sort: mawk has no asort
			x = a[i] + 0
			for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j+1] = a[j]
			a[j+1] = x
		}
		printf "%-60s min %10.0f  median %10.0f %s\n", n, a[1], a[int((k+1)/2)], units[n]
	}
}' "$out" | sort
rm -f "$out"
