// SPDX-License-Identifier: AGPL-3.0-only

package datapath

// The BPF object is generated from bpf/rfm.c and committed, so building rfm
// needs no clang. `go generate ./internal/datapath` rebuilds it (clang and
// llvm-strip from Debian's clang/llvm packages); CI checks the committed
// object matches. The prefix map keeps build paths out of the object.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -strip llvm-strip -target bpfel -no-global-types -type rfm_event_x rfm ../../bpf/rfm.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -fdebug-prefix-map=${PWD}/../..=.

// bpf2go writes no licence header; the generated Go file is rfm's Go code.
//go:generate sed -i "1i // SPDX-License-Identifier: AGPL-3.0-only" rfm_bpfel.go
