#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# Per-packet datapath cost via BPF_PROG_TEST_RUN, next to an empty TCX
# program (the floor) measured in the same run: BenchmarkDatapath repeats
# one frame (at rate 1 one flow, whose packets share events), and
# BenchmarkDatapathInterleaved gives consecutive packets different flows
# (nothing shares an event). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run x -bench Datapath -benchtime 1000000x -count "${COUNT:-5}" ./internal/datapath
