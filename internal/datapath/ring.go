// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The kernel's BPF ring buffer as user space maps it (kernel/bpf/ringbuf.c,
// Documentation/bpf/ringbuf.rst), read in place: records are decoded where
// the producer wrote them, and only then handed back to the kernel by
// advancing consumer_pos. cilium/ebpf's reader (v0.22, the newest) copies
// every record out of the ring first.
//
// Map file offsets: page 0 holds consumer_pos (an unsigned long, the only
// page user space may map writable); page 1 holds producer_pos; the data
// pages follow, mapped twice in a row so a record that wraps past the end
// of the ring is contiguous. Each record starts with an 8-byte header,
// u32 len and u32 pg_off, and takes len + 8 bytes rounded up to 8. The
// producer advances producer_pos when it reserves a record, with the
// busy bit set in len; committing clears it (an atomic exchange), and
// sets the discard bit if the record was thrown away.
const (
	ringHeaderSize = 8       // BPF_RINGBUF_HDR_SZ
	ringBusyBit    = 1 << 31 // BPF_RINGBUF_BUSY_BIT
	ringDiscardBit = 1 << 30 // BPF_RINGBUF_DISCARD_BIT
)

// ringState says what the reader found at the consumer position.
type ringState uint8

const (
	ringRecord ringState = iota // a committed record
	ringEmpty                   // nothing written past the consumer position
	ringBusy                    // a record reserved but not committed yet
)

// ErrFlushed is returned by ReadBatch after Drain once the ring is empty.
var ErrFlushed = errors.New("ring buffer flushed")

var errRingClosed = fmt.Errorf("ring buffer: %w", os.ErrClosed)

// ringReader reads one BPF ring buffer map. A single goroutine reads
// (next, release, wait) while holding mu; Flush and Close may be called
// from any goroutine.
type ringReader struct {
	// mu is held while the mapping is read; Close takes it before
	// unmapping, after waking a blocked wait.
	mu sync.Mutex

	consPage []byte // consumer page, read-write
	prodData []byte // producer page, then the data pages twice, read-only
	consPos  *uintptr
	prodPos  *uintptr
	data     []byte // the data pages twice: 2 × size bytes
	mask     uintptr

	cons   uintptr // consumer position; only this reader writes it
	prod   uintptr // producer position last loaded
	recEnd uintptr // consumer position after the record next returned

	prefaulted byte // what prefault read, kept so its loads stay

	epfd   int
	events [2]unix.EpollEvent
	wakeMu sync.Mutex // orders writes to wakeFd against its close
	wakeFd int        // eventfd: Flush and Close end a wait through it
	closed atomic.Bool
	// flushReq is set by Flush; the reader takes it when it finds the
	// ring empty, looks once more (a Flush comes after the records it is
	// meant to cover) and then reports ErrFlushed.
	flushReq atomic.Bool
	flushing bool // flushReq taken: ErrFlushed when the ring is empty
}

// newRingReader maps the ring buffer map m and registers it with epoll.
func newRingReader(m *ebpf.Map) (*ringReader, error) {
	if m.Type() != ebpf.RingBuf {
		return nil, fmt.Errorf("map %s is a %s, not a ring buffer", m, m.Type())
	}
	size := int(m.MaxEntries())
	page := os.Getpagesize()
	if size <= 0 || size&(size-1) != 0 || size%page != 0 {
		return nil, fmt.Errorf("ring buffer size %d is not a power of two of at least a page", size)
	}
	r := &ringReader{epfd: -1, wakeFd: -1, mask: uintptr(size - 1)}
	var err error
	defer func() {
		if err != nil {
			r.unmap()
		}
	}()
	if r.consPage, err = unix.Mmap(m.FD(), 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("map ring buffer consumer page: %w", err)
	}
	if r.prodData, err = unix.Mmap(m.FD(), int64(page), page+2*size, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("map ring buffer data: %w", err)
	}
	r.consPos = (*uintptr)(unsafe.Pointer(&r.consPage[0]))
	r.prodPos = (*uintptr)(unsafe.Pointer(&r.prodData[0]))
	r.data = r.prodData[page:]
	r.prefault(page)
	// Records a previous reader of this map left unread start there.
	r.cons = atomic.LoadUintptr(r.consPos)
	r.prod = r.cons
	if err = r.openPoll(m.FD()); err != nil {
		return nil, err
	}
	return r, nil
}

// prefault reads a byte of every data page, so the kernel maps them now
// rather than at a page fault each the first time events are read from
// them: 3 µs a page on this project's VMs, where decoding the 42 events
// a page holds takes about 1 µs. MAP_POPULATE did not map these pages
// (measured). The second mapping of the data is left to fault: only
// records that wrap around the end of the ring reach into it.
func (r *ringReader) prefault(page int) {
	var sum byte
	for off := 0; off < len(r.data)/2; off += page {
		sum += r.data[off]
	}
	r.prefaulted = sum
}

// openPoll creates the epoll instance wait blocks in, watching the ring
// buffer map's fd (the kernel signals it) and the wake eventfd.
func (r *ringReader) openPoll(ringFD int) error {
	var err error
	if r.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fmt.Errorf("create epoll instance for the ring buffer: %w", err)
	}
	if r.wakeFd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("create eventfd for the ring buffer: %w", err)
	}
	for _, fd := range []int{ringFD, r.wakeFd} {
		if fd < 0 {
			continue
		}
		if err = unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			return fmt.Errorf("add fd %d to the ring buffer's epoll: %w", fd, err)
		}
	}
	return nil
}

// next returns the data of the committed record at the consumer
// position, in the mapping: it stays valid until release, which must come
// before the next call. Discarded records on the way are skipped. A busy
// record stops the reader: records after it may be committed already,
// but the consumer position cannot pass it.
func (r *ringReader) next() ([]byte, ringState, error) {
	for {
		if r.cons == r.prod {
			// Acquire: the headers up to producer_pos were written
			// before the producer stored it.
			r.prod = atomic.LoadUintptr(r.prodPos)
			if r.cons == r.prod {
				return nil, ringEmpty, nil
			}
		}
		off := r.cons & r.mask
		// Acquire: pairs with the producer's exchange that clears the
		// busy bit, so the record's data is visible once it is clear.
		hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[off])))
		if hdr&ringBusyBit != 0 {
			return nil, ringBusy, nil
		}
		n := uintptr(hdr &^ (ringBusyBit | ringDiscardBit))
		total := (ringHeaderSize + n + 7) &^ 7
		if total > r.prod-r.cons {
			return nil, ringEmpty, fmt.Errorf("ring buffer record at %d claims %d bytes, only %d written", r.cons, n, r.prod-r.cons)
		}
		if hdr&ringDiscardBit != 0 {
			r.cons += total
			atomic.StoreUintptr(r.consPos, r.cons)
			continue
		}
		r.recEnd = r.cons + total
		start := off + ringHeaderSize
		return r.data[start : start+n : start+n], ringRecord, nil
	}
}

// release gives the record next returned back to the producers.
func (r *ringReader) release() {
	r.cons = r.recEnd
	atomic.StoreUintptr(r.consPos, r.cons)
}

// availableBytes is how many bytes producers have written (reserved)
// past the consumer position.
func (r *ringReader) availableBytes() int {
	return int(atomic.LoadUintptr(r.prodPos) - atomic.LoadUintptr(r.consPos))
}

// wait blocks until the kernel signals data, Flush or Close is called, or
// the deadline passes (os.ErrDeadlineExceeded; the zero time waits
// without one). The kernel signals only when a producer asks for a
// wakeup, so the caller looks at the ring before waiting.
func (r *ringReader) wait(deadline time.Time) error {
	for {
		if r.closed.Load() {
			return errRingClosed
		}
		timeout := -1
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				timeout = 0
			} else {
				// Round up: a timeout of 0 would spin until the deadline.
				timeout = int((left + time.Millisecond - 1) / time.Millisecond)
			}
		}
		n, err := unix.EpollWait(r.epfd, r.events[:], timeout)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for ring buffer: %w", err)
		}
		for _, ev := range r.events[:n] {
			if int(ev.Fd) == r.wakeFd {
				var buf [8]byte
				unix.Read(r.wakeFd, buf[:]) // reset the count; EAGAIN if another read did
			}
		}
		if r.closed.Load() {
			return errRingClosed
		}
		if n == 0 {
			return os.ErrDeadlineExceeded
		}
		return nil
	}
}

// wake ends a wait in progress, or the next one.
func (r *ringReader) wake() error {
	r.wakeMu.Lock()
	defer r.wakeMu.Unlock()
	if r.wakeFd < 0 {
		return errRingClosed
	}
	var one [8]byte
	*(*uint64)(unsafe.Pointer(&one[0])) = 1
	if _, err := unix.Write(r.wakeFd, one[:]); err != nil {
		return fmt.Errorf("wake ring buffer reader: %w", err)
	}
	return nil
}

// Flush makes the reader return what the ring holds and then, once it is
// empty, ErrFlushed.
func (r *ringReader) Flush() error {
	if r.closed.Load() {
		return errRingClosed
	}
	r.flushReq.Store(true)
	return r.wake()
}

// Close wakes a blocked reader and unmaps the ring once it has let go.
// Reads after Close return an error wrapping os.ErrClosed.
func (r *ringReader) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	r.wake()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unmap()
}

// unmap unmaps the ring and closes the descriptors it holds.
func (r *ringReader) unmap() error {
	var errs []error
	r.wakeMu.Lock()
	if r.wakeFd >= 0 {
		errs = append(errs, unix.Close(r.wakeFd))
		r.wakeFd = -1
	}
	r.wakeMu.Unlock()
	if r.epfd >= 0 {
		errs = append(errs, unix.Close(r.epfd))
		r.epfd = -1
	}
	for _, b := range []*[]byte{&r.consPage, &r.prodData} {
		if *b != nil {
			errs = append(errs, unix.Munmap(*b))
			*b = nil
		}
	}
	r.data, r.consPos, r.prodPos = nil, nil, nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close ring buffer reader: %w", err)
	}
	return nil
}
