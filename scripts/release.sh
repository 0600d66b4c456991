#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# Builds a release archive: the static rfm binary with its licence texts,
# the README, the example config and the systemd unit.
# Usage: bash scripts/release.sh VERSION [OUTDIR]   (OUTDIR defaults to dist)
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:?usage: scripts/release.sh VERSION [OUTDIR]}
outdir=${2:-dist}
arch=$(go env GOARCH)
name="rfm-$version-linux-$arch"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage/$name/LICENSES" "$outdir"
CGO_ENABLED=0 GOOS=linux go build -trimpath \
	-ldflags "-s -w -X github.com/stepbrobd/rfm/internal/agent.Version=$version" \
	-o "$stage/$name/rfm" ./cmd/rfm
# The binary embeds the BPF object built from bpf/ (GPL-2.0-only); the
# rest is AGPL-3.0-only: both texts go with it.
cp LICENSE README.md examples/rfm.toml deploy/systemd/rfm.service "$stage/$name/"
cp LICENSES/*.txt "$stage/$name/LICENSES/"
tar -C "$stage" -czf "$outdir/$name.tar.gz" "$name"
echo "$outdir/$name.tar.gz"
