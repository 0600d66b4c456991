// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// The ring reader against the kernel's own ring buffer, written by small
// test programs run with BPF_PROG_TEST_RUN: any record length the test
// chooses, and discarded records.

const kernelRingSize = 1 << 14

// kernelRingMax is the longest record a ring of kernelRingSize holds:
// with its header and padding it must stay below the ring size.
const kernelRingMax = kernelRingSize - 2*ringHeaderSize

// Return values of the output program.
const (
	outputOK   = 0
	outputBad  = 1 // malformed input
	outputFull = 2 // the ring had no room
)

type kernelRing struct {
	ring   *ebpf.Map
	output *ebpf.Program
	r      *ringReader
}

// newKernelRing creates a ring buffer map, its reader, and a SCHED_CLS
// program that writes one record per run with bpf_ringbuf_output: its
// input is a little-endian u32 record length, 4 bytes of padding, then
// the bytes the record starts with (the rest of the record is whatever
// a scratch buffer held).
func newKernelRing(t *testing.T) *kernelRing {
	t.Helper()
	requireRoot(t)
	ring, err := ebpf.NewMap(&ebpf.MapSpec{Name: "test_ring", Type: ebpf.RingBuf, MaxEntries: kernelRingSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ring.Close() })
	scratch, err := ebpf.NewMap(&ebpf.MapSpec{Name: "test_scratch", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: kernelRingMax, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { scratch.Close() })
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		// r7 = record length, from input bytes 0-3
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 4),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "bad"),
		asm.LoadMem(asm.R7, asm.RFP, -8, asm.Word),
		asm.JGT.Imm(asm.R7, kernelRingMax, "bad"),
		// r9 = bytes of content after the 8-byte prefix
		asm.LoadMem(asm.R9, asm.R6, 0, asm.Word), // __sk_buff.len
		asm.Add.Imm(asm.R9, -8),
		asm.JGT.Imm(asm.R9, kernelRingMax, "bad"),
		// r8 = scratch buffer
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, scratch.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "bad"),
		asm.Mov.Reg(asm.R8, asm.R0),
		asm.JEq.Imm(asm.R9, 0, "output"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 8),
		asm.Mov.Reg(asm.R3, asm.R8),
		asm.Mov.Reg(asm.R4, asm.R9),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "bad"),
		asm.LoadMapPtr(asm.R1, ring.FD()).WithSymbol("output"),
		asm.Mov.Reg(asm.R2, asm.R8),
		asm.Mov.Reg(asm.R3, asm.R7),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
		asm.JNE.Imm(asm.R0, 0, "full"),
		asm.Mov.Imm(asm.R0, outputOK),
		asm.Return(),
		asm.Mov.Imm(asm.R0, outputBad).WithSymbol("bad"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, outputFull).WithSymbol("full"),
		asm.Return(),
	}
	output, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "test_output", Type: ebpf.SchedCLS, License: "GPL", Instructions: insns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { output.Close() })
	r, err := newRingReader(ring)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return &kernelRing{ring: ring, output: output, r: r}
}

// discarder is a program that reserves a record of n bytes and discards it.
func (k *kernelRing) discarder(t *testing.T, n int32) *ebpf.Program {
	t.Helper()
	insns := asm.Instructions{
		asm.LoadMapPtr(asm.R1, k.ring.FD()),
		asm.Mov.Imm(asm.R2, n),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnRingbufReserve.Call(),
		asm.JEq.Imm(asm.R0, 0, "full"),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRingbufDiscard.Call(),
		asm.Mov.Imm(asm.R0, outputOK),
		asm.Return(),
		asm.Mov.Imm(asm.R0, outputFull).WithSymbol("full"),
		asm.Return(),
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "test_discard", Type: ebpf.SchedCLS, License: "GPL", Instructions: insns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// outputInput is the output program's input for a record of n bytes
// starting with content (padded to the 14 bytes a test run needs).
func outputInput(n int, content []byte) []byte {
	in := make([]byte, 8, 8+max(len(content), 6))
	binary.LittleEndian.PutUint32(in, uint32(n))
	in = append(in, content...)
	for len(in) < 14 {
		in = append(in, 0)
	}
	return in
}

func runProg(p *ebpf.Program, in []byte) (uint32, error) {
	return p.Run(&ebpf.RunOptions{Data: in})
}

// Records of every length the ring holds, 0 to kernelRingMax bytes,
// each read in place as the kernel wrote it, many of them across the
// end of the ring; discarded records between them are skipped.
func TestKernelRingEveryLength(t *testing.T) {
	k := newKernelRing(t)
	discards := []*ebpf.Program{k.discarder(t, 1), k.discarder(t, 61), k.discarder(t, 1000)}
	wrapped := 0
	for n := 0; n <= kernelRingMax; n++ {
		content := recordBody(n, min(n, 2048))
		// A discarded record holds its space until the reader passes it.
		if n%7 == 0 && n < kernelRingMax-1024 {
			if ret, err := runProg(discards[n%3], make([]byte, 14)); err != nil || ret != outputOK {
				t.Fatalf("discard before record of %d bytes: %d, %v", n, ret, err)
			}
		}
		start := k.r.cons
		if ret, err := runProg(k.output, outputInput(n, content)); err != nil || ret != outputOK {
			t.Fatalf("write record of %d bytes: %d, %v", n, ret, err)
		}
		rec, state, err := k.r.next()
		if err != nil || state != ringRecord {
			t.Fatalf("record of %d bytes: state %d, %v", n, state, err)
		}
		if len(rec) != n || !bytes.Equal(rec[:len(content)], content) {
			t.Fatalf("record of %d bytes: read %d bytes starting % x", n, len(rec), rec[:min(len(rec), 16)])
		}
		// Where the record's data began, past any discarded record.
		dataStart := k.r.recEnd - uintptr((ringHeaderSize+n+7)&^7) + ringHeaderSize
		if dataStart&(kernelRingSize-1)+uintptr(n) > kernelRingSize {
			wrapped++
		}
		k.r.release()
		if _, state, _ := k.r.next(); state != ringEmpty {
			t.Fatalf("after the record of %d bytes: state %d, want empty", n, state)
		}
		if got := k.r.availableBytes(); got != 0 {
			t.Fatalf("after the record of %d bytes (from %d): %d bytes left", n, start, got)
		}
	}
	// Most records longer than a few hundred bytes cross the end.
	if wrapped < 1000 {
		t.Fatalf("only %d records crossed the end of the ring", wrapped)
	}
}

// Two producers write records concurrently, retrying while the ring is
// full, while the reader reads in place and waits on epoll: every record
// arrives once, each producer's in order and intact.
func TestKernelRingConcurrentProducers(t *testing.T) {
	const perProducer = 20000
	k := newKernelRing(t)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for p := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; seq < perProducer; {
				n := 5 + (seq*37+p*11)%1500
				content := recordBody(seq, min(n, 64))
				content[4] = byte(p)
				ret, err := runProg(k.output, outputInput(n, content))
				if err != nil || ret == outputBad {
					errs <- fmt.Errorf("producer %d record %d: %d, %v", p, seq, ret, err)
					return
				}
				if ret == outputOK {
					seq++
				}
			}
		}()
	}
	next := [2]int{}
	deadline := time.Now().Add(2 * time.Minute)
	for next[0]+next[1] < 2*perProducer {
		if time.Now().After(deadline) {
			t.Fatalf("read %v records by the deadline, want %d each", next, perProducer)
		}
		rec, state, err := k.r.next()
		if err != nil {
			t.Fatal(err)
		}
		if state != ringRecord {
			if err := k.r.wait(time.Now().Add(PollInterval)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal(err)
			}
			continue
		}
		if len(rec) < 5 || rec[4] > 1 {
			t.Fatalf("record of %d bytes from no producer", len(rec))
		}
		p := int(rec[4])
		seq := next[p]
		want := recordBody(seq, min(len(rec), 64))
		want[4] = byte(p)
		if len(rec) != 5+(seq*37+p*11)%1500 || !bytes.Equal(rec[:len(want)], want) {
			t.Fatalf("producer %d: record of %d bytes starting % x, want record %d", p, len(rec), rec[:len(want)], seq)
		}
		next[p]++
		k.r.release()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, state, _ := k.r.next(); state != ringEmpty {
		t.Fatalf("ring not empty after every record was read: state %d", state)
	}
}
