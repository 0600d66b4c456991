package datapath

// The BPF object is generated from bpf/rfm.c and committed, so building rfm
// needs no clang. `go generate ./internal/datapath` rebuilds it (clang and
// llvm-strip from Debian's clang/llvm packages); CI checks the committed
// object matches. The prefix map keeps build paths out of the object.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -strip llvm-strip -target bpfel -no-global-types rfm ../../bpf/rfm.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu -fdebug-prefix-map=${PWD}/../..=.
