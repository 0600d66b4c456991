// SPDX-License-Identifier: AGPL-3.0-only

package realnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stepbrobd/rfm/test/lab"
)

// pair is two namespaces joined by one veth (offloads on); the agent runs
// in a and watches devA.
type pair struct {
	a, b       string
	devA, devB string
	ipA, ipB   netip.Addr
}

func newPair(t *testing.T) *pair {
	t.Helper()
	p := &pair{a: newNamespace(t, "a"), b: newNamespace(t, "b"), devA: "rfma0", devB: "rfmb0",
		ipA: netip.MustParseAddr("198.18.9.1"), ipB: netip.MustParseAddr("198.18.9.2")}
	vethPair(t, vethEnd{p.a, p.devA, "02:52:4e:00:09:01", "198.18.9.1/24", "2001:db8:9::1/64"},
		vethEnd{p.b, p.devB, "02:52:4e:00:09:02", "198.18.9.2/24", "2001:db8:9::2/64"})
	return p
}

// pacedSender writes UDP datagrams from one socket at about perSecond
// until sent reaches limit, then waits for a higher limit; it counts the
// writes that succeeded (each one crossed TC egress of the sending
// device).
type pacedSender struct {
	conn      *net.UDPConn
	perSecond int
	limit     atomic.Int64
	sent      atomic.Int64
	stop      chan struct{}
	done      chan struct{}
}

func startPacedSender(t *testing.T, conn *net.UDPConn, perSecond int, limit int64) *pacedSender {
	s := &pacedSender{conn: conn, perSecond: perSecond, stop: make(chan struct{}), done: make(chan struct{})}
	s.limit.Store(limit)
	go s.run()
	t.Cleanup(s.halt)
	return s
}

func (s *pacedSender) run() {
	defer close(s.done)
	payload := make([]byte, 64)
	start, base := time.Now(), int64(0)
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		n := s.sent.Load()
		if n >= s.limit.Load() {
			time.Sleep(time.Millisecond)
			start, base = time.Now(), n // pace from where it resumes
			continue
		}
		if due := base + int64(time.Since(start).Seconds()*float64(s.perSecond)); n >= due {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		if _, err := s.conn.Write(payload); err == nil {
			s.sent.Add(1)
		}
	}
}

func (s *pacedSender) halt() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// waitSent polls until at least n datagrams went out.
func (s *pacedSender) waitSent(t testing.TB, n int64) {
	t.Helper()
	lab.Eventually(t, 60*time.Second, fmt.Sprintf("%d datagrams sent", n), func() error {
		if got := s.sent.Load(); got < n {
			return fmt.Errorf("%d sent", got)
		}
		return nil
	})
}

// rateChange is one `rfm set sample-rate` under load: when it started and
// how many datagrams had been sent when it started and when it returned.
type rateChange struct {
	rate          int
	started       time.Time
	before, after int64
}

// TestSampleRateChangeUnderLoad changes the sample rate 1 -> 100 -> 1 while
// a known UDP stream flows. Must hold: after each change the stream's flow
// estimate stays within the sampling bound of the datagrams the flow
// covers (no event sampled at one rate is scaled by another: the old
// datapath scaled rate-1 events still in flight by 100), and the interface
// counter is exact throughout.
func TestSampleRateChangeUnderLoad(t *testing.T) {
	p := newPair(t)
	sink := lab.UDPConn(t, p.b, "198.18.9.2:5001", "")
	go func() { // drain, so the receiver never answers or backs up
		buf := make([]byte, 2048)
		for {
			if _, err := sink.Read(buf); err != nil {
				return
			}
		}
	}()
	a := startAgent(t, p.a, []string{p.devA}, 1)
	const sport = 40000
	conn := lab.UDPConn(t, p.a, "198.18.9.1:"+strconv.Itoa(sport), "198.18.9.2:5001")
	key := flowKey{p.devA, "egress", unix.IPPROTO_UDP, "198.18.9.1:40000", "198.18.9.2:5001"}
	m0 := a.mustScrape(t)

	const perSecond = 100_000
	const phase1, phase2, phase3 = 50_000, 30_000, 50_000
	s := startPacedSender(t, conn, perSecond, 0)
	var changes []rateChange
	setRate := func(rate int) rateChange {
		c := rateChange{rate: rate, started: time.Now(), before: s.sent.Load()}
		a.setSampleRate(t, rate)
		c.after = s.sent.Load()
		changes = append(changes, c)
		return c
	}
	// The stream's flow either lives on across a rate change or ends at
	// the change and starts again (as `rfm set sample-rate` documents
	// today); its start time tells which. It covers the datagrams sent
	// since its start: all of them, or those after the change it started
	// at, which took effect while the command ran ([sent - after, sent -
	// before]); events of datagrams sent up to 50 ms before the change may
	// still land in the new flow at their own rate (slack). The bound
	// treats every datagram sent from the start of the 1 -> 100 command to
	// the end of the next 100 -> 1 one as sampled at 100.
	slack := int64(perSecond / 20)
	checkpoint := func(what string) {
		t.Helper()
		f := a.settledFlow(t, key, 500*time.Millisecond, 20*time.Second)
		sent := s.sent.Load()
		low, high, spanStart := sent, sent, int64(0)
		for _, c := range changes {
			if !f.Start.Before(c.started) {
				low, high, spanStart = sent-c.after, sent-c.before+slack, c.before
			}
		}
		var mayBeAt100 int64
		for i, c := range changes {
			if c.rate != 100 {
				continue
			}
			from, to := max(c.before, spanStart), sent
			if i+1 < len(changes) {
				to = changes[i+1].after
			}
			mayBeAt100 += max(0, to-from)
		}
		bound := samplingBound(100, float64(mayBeAt100), 1)
		lo, hi := float64(low)-bound, float64(high)+bound
		if est := float64(f.Packets); est < lo || est > hi {
			t.Errorf("%s: flow estimate %d packets (%d events sampled), want within [%.0f, %.0f]: %d sent, the flow (start %s) covers %d to %d of them, sampling bound ± %.0f; changes %+v",
				what, f.Packets, f.Sampled, lo, hi, sent, f.Start.Format(time.StampMicro), low, high, bound, changes)
		} else {
			t.Logf("%s: flow estimate %d packets (%d events sampled), within [%.0f, %.0f]", what, f.Packets, f.Sampled, lo, hi)
		}
		m := a.mustScrape(t)
		if got := m.iface(p.devA, "ipv4").minus(m0.iface(p.devA, "ipv4")).txPackets; got != float64(sent) {
			t.Errorf("%s: %s tx ipv4 packets = %.0f, want %d", what, p.devA, got, sent)
		}
		if drops := m.sum("rfm_collector_dropped_events_total"); drops != 0 {
			t.Errorf("%s: %v events dropped by a full ring: the estimate cannot be checked", what, drops)
		}
	}
	// Two rounds: how many rate-1 events are in flight at the change
	// varies from run to run.
	for round := 1; round <= 2; round++ {
		s.limit.Store(s.sent.Load() + phase1 + phase2)
		s.waitSent(t, s.limit.Load()-phase2)
		setRate(100)
		s.waitSent(t, s.limit.Load())
		checkpoint(fmt.Sprintf("round %d, after 1 -> 100", round))

		s.limit.Store(1 << 62)
		s.waitSent(t, s.sent.Load()+phase3/4)
		back := setRate(1)
		s.limit.Store(back.after + phase3)
		s.waitSent(t, back.after+phase3)
		checkpoint(fmt.Sprintf("round %d, after 100 -> 1", round))
	}
}

// TestInterfaceDeletedUnderTraffic deletes a watched interface while UDP
// flows through it, three times (a fresh veth each round, attached through
// the pattern "rfmd*"). Must hold: once rfm has detached, /metrics has no
// series of the interface, neither by name nor as ifname="<ifindex>", and
// `rfm flows` lists no flow of it: events still in flight when the
// interface went do not bring its flows back.
func TestInterfaceDeletedUnderTraffic(t *testing.T) {
	nsA, nsB := newNamespace(t, "a"), newNamespace(t, "b")
	a := startAgent(t, nsA, []string{"rfmd*"}, 1)
	for round := 1; round <= 3; round++ {
		devA := fmt.Sprintf("rfmd%d", round)
		ipA, ipB := fmt.Sprintf("198.18.%d.1", 20+round), fmt.Sprintf("198.18.%d.2", 20+round)
		vethPair(t, vethEnd{nsA, devA, fmt.Sprintf("02:52:4e:00:%02x:01", 20+round), ipA + "/24", fmt.Sprintf("2001:db8:%d::1/64", 20+round)},
			vethEnd{nsB, fmt.Sprintf("rfme%d", round), fmt.Sprintf("02:52:4e:00:%02x:02", 20+round), ipB + "/24", fmt.Sprintf("2001:db8:%d::2/64", 20+round)})
		idx := strconv.Itoa(ifindexIn(t, nsA, devA))
		sink := lab.UDPConn(t, nsB, ipB+":5001", "")
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, err := sink.Read(buf); err != nil {
					return
				}
			}
		}()
		lab.Eventually(t, 10*time.Second, devA+" attached", func() error {
			m, err := a.scrape()
			if err != nil {
				return err
			}
			if m.sum("rfm_interface_attached", "ifname", devA) != 1 {
				return errors.New("not yet")
			}
			return nil
		})

		// Four flat-out senders: batches and the ring hold events of the
		// interface at the moment it goes.
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for i := 0; i < 4; i++ {
			conn := lab.UDPConn(t, nsA, fmt.Sprintf("%s:%d", ipA, 41000+i), ipB+":5001")
			wg.Add(1)
			go func() {
				defer wg.Done()
				payload := make([]byte, 64)
				for {
					select {
					case <-stop:
						return
					default:
					}
					conn.Write(payload) // fails once the interface is gone
				}
			}()
		}
		lab.Eventually(t, 10*time.Second, "the four flows listed", func() error {
			n := 0
			for _, f := range a.flows(t).Flows {
				if f.Iface == devA {
					n++
				}
			}
			if n < 4 {
				return fmt.Errorf("%d flows of %s", n, devA)
			}
			return nil
		})
		lab.Run(t, "ip", "-n", nsA, "link", "del", devA)
		close(stop)
		wg.Wait()

		// Series and flows by the interface's name may linger until rfm
		// has detached and ended the flows; anything named by the bare
		// ifindex is a flow recreated after the name was forgotten, at
		// any time a failure.
		check := func() (recreated, lingering error) {
			var bad, left []error
			for _, s := range a.mustScrape(t) {
				switch s.Labels["ifname"] {
				case idx:
					bad = append(bad, fmt.Errorf("/metrics: %s%v = %v", s.Name, s.Labels, s.Value))
				case devA:
					left = append(left, fmt.Errorf("/metrics: %s%v = %v", s.Name, s.Labels, s.Value))
				}
			}
			for _, f := range a.flows(t).Flows {
				switch f.Iface {
				case idx:
					bad = append(bad, fmt.Errorf("rfm flows: %+v", f))
				case devA:
					left = append(left, fmt.Errorf("rfm flows: %+v", f))
				}
			}
			return errors.Join(bad...), errors.Join(left...)
		}
		fail := func(err error) {
			t.Helper()
			t.Fatalf("round %d: after %s (ifindex %s) was deleted, rfm shows it by ifindex:\n%v", round, devA, idx, err)
		}
		lab.Eventually(t, 10*time.Second, devA+" detached and its flows ended", func() error {
			recreated, lingering := check()
			if recreated != nil {
				fail(recreated)
			}
			return lingering
		})
		// Flows live until their idle timeout (120s here), so a flow that a
		// late event recreates stays listed: keep looking for a while (100
		// batch flush intervals).
		for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			recreated, lingering := check()
			if err := errors.Join(recreated, lingering); err != nil {
				fail(err)
			}
		}
		if a.Exited() {
			t.Fatalf("agent exited: %v", a.State())
		}
	}
}
