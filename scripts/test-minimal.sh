#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-only
# Runs `bash scripts/test.sh` in a minimal Debian root (debootstrap
# --variant=minbase: no procps, no /bin/kill, none of the test tools) with
# only Go added, as on a bare machine or in a container. It proves that
# scripts/test.sh installs everything the tests execute.
#
# Usage: sudo bash scripts/test-minimal.sh [ROOT]
#   ROOT     where the Debian root is built (default /var/tmp/rfm-minimal-root);
#            an existing root is reused: the work tree and Go are copied in anew
#   MIRROR   Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   SUITE    Debian suite (default bookworm)
#   FRESH=1  build the root anew
#   MODULES=download  let Go in the root fetch modules from its proxy over
#            HTTPS itself; by default they are copied in from this host's
#            module cache (or its proxy), so the root needs no trust setup
#            for networks that intercept TLS
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
root=${1:-/var/tmp/rfm-minimal-root}
mirror=${MIRROR:-http://deb.debian.org/debian}
suite=${SUITE:-bookworm}

if [ "$(id -u)" -ne 0 ]; then
	echo "scripts/test-minimal.sh: run as root (debootstrap, chroot, and the tests themselves)" >&2
	exit 1
fi
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
goroot=$(go env GOROOT)

if [ "${FRESH:-0}" = 1 ]; then rm -rf "$root"; fi
if [ ! -x "$root/bin/bash" ]; then
	command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
	echo "== debootstrap --variant=minbase $suite $root"
	debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.debootstrap.log" 2>&1 ||
		{ tail -20 "$root.debootstrap.log" >&2; exit 1; }
fi
# Package scripts must not start daemons (frr, prometheus) in the root, as
# in container images.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf"

echo "== Go $(go env GOVERSION) and the work tree into $root"
rm -rf "$root/usr/local/go" "$root/src/rfm"
mkdir -p "$root/usr/local" "$root/src/rfm"
cp -a "$goroot" "$root/usr/local/go"
# Tracked and untracked files, without build output or .git.
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
	git -C "$repo" ls-files -z -co --exclude-standard | tar -C "$repo" --null -T - -cf - | tar -C "$root/src/rfm" -xf -
else
	tar -C "$repo" --exclude=./.git -cf - . | tar -C "$root/src/rfm" -xf -
fi

goproxy=off
if [ "${MODULES:-copy}" = download ]; then
	goproxy=$(go env GOPROXY)
else
	echo "== Go modules of go.sum into the root's module cache"
	GOMODCACHE="$root/root/go/pkg/mod" GOFLAGS=-modcacherw \
		GOPROXY="file://$(go env GOMODCACHE)/cache/download,$(go env GOPROXY)" go mod download
fi

for tool in sysctl kill ps clang ip nfdump; do
	for dir in /usr/sbin /usr/bin /sbin /bin; do
		if [ -x "$root$dir/$tool" ]; then
			echo "   note: $dir/$tool is in the root before the test script runs"
			break
		fi
	done
done

echo "== bash scripts/test.sh in the root"
# A private mount namespace: /proc, /sys (with /sys/fs/bpf and BTF) and
# /dev go away with it.
unshare --mount --propagation private -- bash -euc '
	root=$1
	# The root must be a mount point: `ip netns exec` remounts / as a
	# slave, which fails on a plain directory.
	mount --bind "$root" "$root"
	mount -t proc proc "$root/proc"
	mount --rbind /sys "$root/sys"
	mount --rbind /dev "$root/dev"
	mount -t tmpfs tmpfs "$root/run"
	exec chroot "$root" /usr/bin/env -i \
		PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 FUZZTIME="${FUZZTIME:-4s}" GOPROXY="$2" GOFLAGS=-modcacherw \
		bash -c "cd /src/rfm && bash scripts/test.sh"
' rfm-minimal "$root" "$goproxy"
echo "== scripts/test.sh passed in the minimal $suite root $root"
