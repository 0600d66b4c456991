#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# Per-packet cost of the XDP fast path via BPF_PROG_TEST_RUN: the empty
# XDP program (the floor), the pass path under 100k blocklist prefixes and
# 64 rules (once with the packet's /24 free of blocklisted addresses, once
# holding some), the drop paths, and xdp-filter from Debian's xdp-tools on
# the same frames, all in one run. Each figure comes as wall time and as
# the kernel's own time (kernel-*), which leaves out the time the runner
# was scheduled away. Needs root; installs xdp-tools if missing.
#
# With OLD=REV (a git revision), the benchmark of REV's tree is built too
# and the two run alternately, COUNT rounds of one pass each (old, new,
# old, ...), output prefixed "old:" and "new:": on a shared machine only
# builds measured side by side compare.
#
# xdp-filter keeps its state in bpffs, which is mounted here in a private
# mount namespace (the host's /sys/fs/bpf is left alone), and is run with
# nsenter rather than `ip netns exec`, which would remount /sys.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v xdp-filter >/dev/null || apt-get install -y xdp-tools >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/new.test" ./internal/datapath/xdp
builds=new
if [ -n "${OLD:-}" ]; then
	mkdir "$tmp/old"
	git archive "$OLD" | tar -x -C "$tmp/old"
	(cd "$tmp/old" && go test -c -o "$tmp/old.test" ./internal/datapath/xdp)
	builds="old new"
fi
ns=rfmxf$$
unshare -m bash -euo pipefail -c '
ns='"$ns"' tmp='"$tmp"' builds="'"$builds"'" count='"${COUNT:-5}"' benchtime='"${BENCHTIME:-1000000x}"'
mount -t bpf bpf /sys/fs/bpf
ip netns add "$ns"
trap "ip netns del $ns" EXIT
ip -n "$ns" link add xf0 type veth peer name xf1
ip -n "$ns" link set xf0 up
ip -n "$ns" link set xf1 up
in_ns() { nsenter --net=/run/netns/"$ns" "$@"; }
in_ns xdp-filter load xf0 -m native -f ipv4,udp
in_ns xdp-filter ip 198.18.0.7 -m src
in_ns xdp-filter port 9999 -p udp -m dst
for round in $(seq "$count"); do
	for b in $builds; do
		RFM_XDP_FILTER_NETNS="$ns" "$tmp/$b.test" -test.run "^\$" -test.bench "^BenchmarkXDP\$" \
			-test.benchtime "$benchtime" -test.count 1 | sed "s/^/$b: /"
	done
done
in_ns xdp-filter unload xf0
'
