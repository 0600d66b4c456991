#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# Sampling accuracy with the real BPF program (BPF_PROG_TEST_RUN) and the
# real flow table: exact interface counters, per-flow estimate error
# against sqrt(N/P), flow coverage against 1-(1-1/N)^P. Needs root; about
# 15 s. Writes bench/accuracy-results.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -count=1 -run Accuracy ./test/accuracy -args -results "$PWD/bench/accuracy-results.txt"
cat bench/accuracy-results.txt
