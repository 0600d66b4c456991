// SPDX-License-Identifier: AGPL-3.0-only

package xdp

// The BPF object is generated from bpf/xdp.c and committed, so building rfm
// needs no clang. `go generate ./internal/datapath/xdp` rebuilds it (clang
// and llvm-strip from Debian's clang/llvm packages). -mcpu=v3 (32-bit ALU
// and jumps, kernel 5.1+) drops the zero-extension pairs clang's default
// v1 puts around every __u32: the program is 7% smaller once jitted and
// a drop ~1 ns cheaper (bench/xdp-results.txt).
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -strip llvm-strip -target bpfel -no-global-types xdpobj ../../../bpf/xdp.c -- -O2 -mcpu=v3 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -fdebug-prefix-map=${PWD}/../../..=.

// bpf2go writes no licence header; the generated Go file is rfm's Go code.
//go:generate sed -i "1i // SPDX-License-Identifier: AGPL-3.0-only" xdpobj_bpfel.go
