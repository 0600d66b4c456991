// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// fakeRing is a ring buffer laid out as the kernel lays it out, in
// ordinary memory, with a producer the test drives: it can leave a
// record busy, which no BPF program can be made to do. The data is
// written twice, as the kernel's double mapping shows it.
type fakeRing struct {
	r          *ringReader
	size       uintptr
	cons, prod uintptr // what r's consPos and prodPos point at
	data       []byte
}

func newFakeRing(t testing.TB, size int) *fakeRing {
	t.Helper()
	f := &fakeRing{size: uintptr(size), data: make([]byte, 2*size)}
	f.r = &ringReader{epfd: -1, wakeFd: -1, consPos: &f.cons, prodPos: &f.prod, data: f.data, mask: uintptr(size - 1)}
	if err := f.r.openPoll(-1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.r.Close() })
	return f
}

func (f *fakeRing) put(pos uintptr, b []byte) {
	for i, c := range b {
		off := (pos + uintptr(i)) & (f.size - 1)
		f.data[off], f.data[off+f.size] = c, c
	}
}

func (f *fakeRing) putHeader(pos uintptr, hdr uint32) {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], hdr)
	f.put(pos, b[:])
}

// reserve adds a busy record of n bytes with content body and returns
// its position, or false when the ring has no room (as the kernel
// refuses a record that would bring the producer within a byte of a
// whole ring ahead of the consumer).
func (f *fakeRing) reserve(body []byte) (uintptr, bool) {
	total := uintptr(ringHeaderSize+len(body)+7) &^ 7
	if f.prod+total-atomic.LoadUintptr(&f.cons) > f.size-1 {
		return 0, false
	}
	pos := f.prod
	f.putHeader(pos, uint32(len(body))|ringBusyBit)
	f.put(pos+ringHeaderSize, body)
	atomic.StoreUintptr(&f.prod, pos+total)
	return pos, true
}

// commit clears the busy bit of the record at pos, setting the discard
// bit if discard.
func (f *fakeRing) commit(pos uintptr, n int, discard bool) {
	hdr := uint32(n)
	if discard {
		hdr |= ringDiscardBit
	}
	f.putHeader(pos, hdr)
}

// recordBody is the content of record seq of n bytes.
func recordBody(seq, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(seq*7 + i*13 + n)
	}
	if n >= 4 {
		binary.LittleEndian.PutUint32(b, uint32(seq))
	}
	return b
}

// readAllRecords reads the committed records at the consumer position,
// copying each.
func readAllRecords(r *ringReader) ([][]byte, ringState, error) {
	var out [][]byte
	for {
		rec, state, err := r.next()
		if err != nil || state != ringRecord {
			return out, state, err
		}
		out = append(out, bytes.Clone(rec))
		r.release()
	}
}

// A model of the ring: records in reservation order, each busy,
// committed or discarded. The reader must return exactly the committed
// ones from the head up to the first busy one, in order, and hand the
// space back.
type modelRecord struct {
	pos       uintptr
	body      []byte
	committed bool
	discarded bool
}

// checkRingModel drives a fake ring from ops and checks the reader
// against the model after every read; the ops cover every record size
// up to a quarter of the ring, wrap-around, discards and records
// committed out of order.
func checkRingModel(t *testing.T, ops []byte) {
	const size = 1 << 12
	f := newFakeRing(t, size)
	var pending []*modelRecord // reserved, not yet read
	seq := 0
	read := func() {
		t.Helper()
		got, state, err := readAllRecords(f.r)
		if err != nil {
			t.Fatal(err)
		}
		var want [][]byte
		for len(pending) > 0 && pending[0].committed {
			if !pending[0].discarded {
				want = append(want, pending[0].body)
			}
			pending = pending[1:]
		}
		if len(got) != len(want) {
			t.Fatalf("read %d records, want %d", len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("record %d: read % x, want % x", i, got[i], want[i])
			}
		}
		wantState := ringEmpty
		wantCons := f.prod
		if len(pending) > 0 {
			wantState, wantCons = ringBusy, pending[0].pos
		}
		if state != wantState {
			t.Fatalf("reader stopped with state %d, want %d", state, wantState)
		}
		if c := atomic.LoadUintptr(&f.cons); c != wantCons {
			t.Fatalf("consumer position %d, want %d", c, wantCons)
		}
	}
	for i := 0; i+1 < len(ops); i += 2 {
		op, arg := ops[i]%4, int(ops[i+1])
		switch op {
		case 0, 1: // reserve a record of 0..1023 bytes
			n := (arg*4 + int(op)*3 + i) % 1024
			body := recordBody(seq, n)
			if pos, ok := f.reserve(body); ok {
				pending = append(pending, &modelRecord{pos: pos, body: body})
				seq++
			}
		case 2: // commit (or discard) a busy record, any of them
			var busy []*modelRecord
			for _, m := range pending {
				if !m.committed {
					busy = append(busy, m)
				}
			}
			if len(busy) > 0 {
				m := busy[arg%len(busy)]
				m.committed, m.discarded = true, arg&0x80 != 0
				f.commit(m.pos, len(m.body), m.discarded)
			}
		case 3:
			read()
		}
	}
	for _, m := range pending {
		if !m.committed {
			m.committed = true
			f.commit(m.pos, len(m.body), false)
		}
	}
	read()
}

func TestRingReaderModel(t *testing.T) {
	// Reserve until full, commit the last first, read (nothing: the
	// first is busy), then commit the rest in reverse, some discarded.
	var ops []byte
	for i := range 40 {
		ops = append(ops, 0, byte(i*37))
	}
	ops = append(ops, 3, 0)
	for i := 39; i >= 0; i-- {
		ops = append(ops, 2, byte(i)|byte(i%3)<<7, 3, 0)
	}
	checkRingModel(t, ops)
	// Every size from 0 to 1023, one at a time, wrapping many times.
	ops = ops[:0]
	for n := range 1024 {
		ops = append(ops, byte(n%2), byte(n/4), 2, 0, 3, 0)
	}
	checkRingModel(t, ops)
}

func FuzzRingReader(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 2, 0, 3, 0, 2, 0x81, 3, 0})
	f.Add(bytes.Repeat([]byte{0, 200, 1, 255, 2, 3, 2, 0x80, 3, 0}, 30))
	f.Fuzz(checkRingModel)
}

// A record that is reserved but not committed holds ReadBatch back,
// even when records after it are committed; once it is committed
// ReadBatch returns it and the ones after it.
func TestReadBatchWaitsForBusyRecord(t *testing.T) {
	f := newFakeRing(t, 1<<12)
	d := &Datapath{ring: f.r, eventSize: EventSize}
	first, _ := f.reserve(eventBytes(1))
	second, _ := f.reserve(eventBytes(2))
	f.commit(second, EventSize, false)
	got := make(chan []Event, 1)
	go func() {
		evs := make([]Event, 8)
		n, err := d.ReadBatch(evs)
		if err != nil {
			t.Error(err)
		}
		got <- evs[:n]
	}()
	// ReadBatch cannot return before the commit below; if it ever did
	// it returns nothing (first is busy) or the wrong events.
	select {
	case evs := <-got:
		t.Fatalf("ReadBatch returned %d events while the first record was busy", len(evs))
	case <-time.After(50 * time.Millisecond):
	}
	f.commit(first, EventSize, false)
	evs := <-got
	if len(evs) != 2 || evs[0].SrcPort != 1 || evs[1].SrcPort != 2 {
		t.Fatalf("read %+v, want the events of ports 1 and 2 in order", evs)
	}
}

// eventBytes is one raw fields-off event with source port port.
func eventBytes(port uint16) []byte {
	b := make([]byte, EventSize)
	binary.LittleEndian.PutUint16(b[offSport:], port)
	binary.LittleEndian.PutUint32(b[offRate:], 1)
	b[offProto] = 17
	return b
}

// putEvents commits one record of events with the given source ports.
func (f *fakeRing) putEvents(t testing.TB, ports ...uint16) {
	t.Helper()
	var body []byte
	for _, p := range ports {
		body = append(body, eventBytes(p)...)
	}
	pos, ok := f.reserve(body)
	if !ok {
		t.Fatal("fake ring full")
	}
	f.commit(pos, len(body), false)
}

// After Flush (Drain's last step) ReadBatch returns what the ring holds,
// however many calls that takes, then ErrFlushed once; then it reads
// and waits as before.
func TestReadBatchFlush(t *testing.T) {
	f := newFakeRing(t, 1<<14)
	d := &Datapath{ring: f.r, eventSize: EventSize}
	f.putEvents(t, 1, 2, 3)
	f.putEvents(t, 4, 5)
	if err := f.r.Flush(); err != nil {
		t.Fatal(err)
	}
	evs := make([]Event, 2)
	var ports []uint16
	for {
		n, err := d.ReadBatch(evs)
		for _, e := range evs[:n] {
			ports = append(ports, e.SrcPort)
		}
		if errors.Is(err, ErrFlushed) {
			if n != 0 {
				t.Fatalf("ErrFlushed with %d events", n)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(ports) != "[1 2 3 4 5]" {
		t.Fatalf("read ports %v before ErrFlushed, want [1 2 3 4 5]", ports)
	}
	// An empty ring flushed reports ErrFlushed at once.
	f.r.Flush()
	if n, err := d.ReadBatch(evs); n != 0 || !errors.Is(err, ErrFlushed) {
		t.Fatalf("flushed empty ring: %d events, %v; want ErrFlushed", n, err)
	}
	// Later records are read as usual.
	f.putEvents(t, 6)
	if n, err := d.ReadBatch(evs); n != 1 || err != nil || evs[0].SrcPort != 6 {
		t.Fatalf("after the flush: %d events, %v", n, err)
	}
}

// Close ends a ReadBatch blocked on an empty ring with os.ErrClosed, and
// every ReadBatch after it.
func TestReadBatchClose(t *testing.T) {
	f := newFakeRing(t, 1<<12)
	d := &Datapath{ring: f.r, eventSize: EventSize}
	done := make(chan error, 1)
	go func() {
		_, err := d.ReadBatch(make([]Event, 4))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("ReadBatch returned on an empty ring: %v", err)
	case <-time.After(2 * PollInterval):
	}
	if err := f.r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("blocked ReadBatch after Close: %v, want os.ErrClosed", err)
	}
	if _, err := d.ReadBatch(make([]Event, 4)); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("ReadBatch after Close: %v, want os.ErrClosed", err)
	}
	if err := f.r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := f.r.Flush(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Flush after Close: %v, want os.ErrClosed", err)
	}
}

// The real datapath, closed while ReadBatch waits, ends it with
// os.ErrClosed.
func TestDatapathCloseEndsReadBatch(t *testing.T) {
	requireRoot(t)
	d, err := Load(Options{RingBufSize: 1 << 16, MaxInterfaces: 4})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := d.ReadBatch(make([]Event, 4))
		done <- err
	}()
	time.Sleep(2 * PollInterval) // let it block; it must not return either way
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("ReadBatch after Close: %v, want os.ErrClosed", err)
	}
}

// Producers on every CPU write events through the real program while the
// consumer reads them: every event arrives once, each producer's in
// the order it sent them, and Drain ends the reading with ErrFlushed.
func TestReadBatchConcurrentProducers(t *testing.T) {
	const perProducer = 20000
	tb := newTestbedOpts(t, 1, Options{RingBufSize: 1 << 23, BatchEvents: 16})
	// One producer per CPU, pinned: the datapath keeps order per CPU.
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	var cpus []int
	for cpu := 0; cpu < 1024 && len(cpus) < allowed.Count(); cpu++ {
		if allowed.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	producers := len(cpus)
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p, cpu := range cpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The thread ends with the goroutine (locked, never
			// unlocked), and its CPU affinity with it.
			runtime.LockOSThread()
			var one unix.CPUSet
			one.Set(cpu)
			if err := unix.SchedSetaffinity(0, &one); err != nil {
				errs <- fmt.Errorf("pin producer %d to CPU %d: %w", p, cpu, err)
				return
			}
			for i := range perProducer {
				// The producer is the source's last byte, the sequence
				// number the source port.
				frame := append(ethHeader(0x0800), ipv4Packet(fmt.Sprintf("198.18.0.%d", p+1), v4b, 17, v4opts{}, l4Header(17, uint16(i), 53, 8))...)
				if _, err := tb.progs[Ingress].Run(&ebpf.RunOptions{Data: frame}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	next := make([]int, producers)
	got := 0
	evs := make([]Event, 100) // not a multiple of the batch
	consume := func(n int) {
		for _, e := range evs[:n] {
			p := int(e.Src[15]) - 1
			if p < 0 || p >= producers {
				t.Fatalf("event from unknown source %v", e.Src)
			}
			if int(e.SrcPort) != next[p]%65536 {
				t.Fatalf("producer %d: event %d, want %d", p, e.SrcPort, next[p]%65536)
			}
			next[p]++
			got++
		}
	}
	// Drain once the producers are done, from another goroutine while
	// ReadBatch runs, as the agent does at shutdown.
	drained := make(chan error, 1)
	go func() { wg.Wait(); drained <- tb.d.Drain() }()
	for {
		n, err := tb.d.ReadBatch(evs)
		consume(n)
		if errors.Is(err, ErrFlushed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st, err := tb.d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got != producers*perProducer || st.RingDrops != 0 {
		t.Fatalf("read %d events, want %d (ring drops %d)", got, producers*perProducer, st.RingDrops)
	}
}
