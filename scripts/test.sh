#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# Installs what the rfm test suite needs (Debian/Ubuntu, as root) and runs
# every test against the real kernel. Usage: sudo bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "scripts/test.sh: run as root (the tests load BPF programs and create network namespaces)" >&2
	exit 1
fi
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
if ! command -v go >/dev/null; then
	echo "scripts/test.sh: Go 1.25 or newer is required (https://go.dev/doc/install)" >&2
	exit 1
fi

# Every command this script and the tests execute, with its Debian
# package. A minimal Debian (debootstrap minbase, a container image) has
# none of the tools below the first line; scripts/test-minimal.sh runs the
# suite in such a root to keep this list complete. The tests skip what is
# missing, so a gap here shows as skips, not failures.
need=()
for pair in sh:dash bash:bash cat:coreutils stdbuf:coreutils setpriv:util-linux cmp:diffutils find:findutils \
	clang:clang llvm-strip:llvm bpftool:bpftool ip:iproute2 ethtool:ethtool \
	nfcapd:nfdump nfdump:nfdump nfacctd:pmacct tshark:tshark curl:curl gobgp:gobgpd gobgpd:gobgpd /usr/lib/frr/bgpd:frr \
	nix-instantiate:nix-bin systemd-analyze:systemd promtool:prometheus prometheus:prometheus; do
	bin=${pair%%:*} pkg=${pair#*:}
	if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "$bin" ]; then need+=("$pkg"); fi
done
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
# Go fetches modules over HTTPS.
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if [ ${#need[@]} -gt 0 ]; then
	echo "installing: ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "== BPF objects match bpf/rfm.c and bpf/xdp.c"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for obj in internal/datapath/rfm_bpfel.o internal/datapath/xdp/xdpobj_bpfel.o; do
	pkg=$(dirname "$obj")
	cp "$obj" "$tmp/committed.o"
	go generate "./$pkg"
	if ! cmp -s "$obj" "$tmp/committed.o"; then
		echo "$obj is stale: run 'go generate ./$pkg' and commit it" >&2
		exit 1
	fi
done

echo "== gofmt and go vet"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi
go vet ./...

echo "== go test"
go test -count=1 -timeout 30m ./...

# Every fuzz target also runs briefly beyond its committed corpus
# (FUZZTIME=5m bash scripts/test.sh for a longer search).
echo "== fuzz (${FUZZTIME:-4s} each)"
for target in $(grep -rl --include='*_test.go' '^func Fuzz' internal | xargs grep -h '^func Fuzz' | sed 's/^func \(Fuzz[A-Za-z0-9]*\).*/\1/' | sort -u); do
	pkg=$(grep -rl --include='*_test.go' "^func $target(" internal | head -1 | xargs dirname)
	echo "-- $target ($pkg)"
	corpus=$(ls "$pkg/testdata/fuzz/$target" 2>/dev/null || true)
	for attempt in 1 2; do
		if go test -run '^$' -fuzz "^$target\$" -fuzztime "${FUZZTIME:-4s}" -fuzzminimizetime 5x "./$pkg" >/tmp/rfm-fuzz.log 2>&1; then
			break
		fi
		# Go's fuzz coordinator can report its own -fuzztime deadline as a
		# failure (golang/go#75804, fixed in Go 1.27). A real failure
		# writes the failing input into the corpus; this one writes none.
		if [ "$attempt" = 1 ] && grep -q '^    context deadline exceeded$' /tmp/rfm-fuzz.log &&
			[ "$(ls "$pkg/testdata/fuzz/$target" 2>/dev/null || true)" = "$corpus" ]; then
			echo "   coordinator deadline race (golang/go#75804), no failing input: running it again"
			continue
		fi
		cat /tmp/rfm-fuzz.log >&2
		exit 1
	done
done
