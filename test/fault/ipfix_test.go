// SPDX-License-Identifier: AGPL-3.0-only

package fault

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"

	"github.com/stepbrobd/rfm/test/lab"
)

const ipfixPort = 4739

// ipfixMessage is what the test collector kept of one datagram.
type ipfixMessage struct {
	at     time.Time
	sets   []uint16 // set IDs in order: 2 template, 3 options template, >= 256 data
	sports []uint16 // sourceTransportPort of every data record that decoded
}

func (m ipfixMessage) hasSet(pred func(uint16) bool) bool {
	for _, id := range m.sets {
		if pred(id) {
			return true
		}
	}
	return false
}

// ipfixCollector is a UDP collector in B that forgets its templates when
// it restarts, as a real one does.
type ipfixCollector struct {
	t    testing.TB
	ns   string
	mu   sync.Mutex
	conn *net.UDPConn
	done chan struct{}
	msgs []ipfixMessage
}

func startIPFIXCollector(t testing.TB, ns string) *ipfixCollector {
	c := &ipfixCollector{t: t, ns: ns}
	c.open()
	t.Cleanup(c.close)
	return c
}

func (c *ipfixCollector) open() {
	c.conn = lab.UDPConn(c.t, c.ns, fmt.Sprintf("%s:%d", addrB, ipfixPort), "")
	c.done = make(chan struct{})
	conn, done := c.conn, c.done
	templates := netflow.CreateTemplateSystem()
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			m := decodeIPFIX(buf[:n], templates)
			c.mu.Lock()
			c.msgs = append(c.msgs, m)
			c.mu.Unlock()
		}
	}()
}

func (c *ipfixCollector) close() {
	if c.conn != nil {
		c.conn.Close()
		<-c.done
		c.conn = nil
	}
}

// restart closes the socket, then reopens the same port with no templates.
func (c *ipfixCollector) restart() { c.close(); c.open() }

func (c *ipfixCollector) since(t0 time.Time) []ipfixMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []ipfixMessage
	for _, m := range c.msgs {
		if !m.at.Before(t0) {
			out = append(out, m)
		}
	}
	return out
}

// decodeIPFIX lists the set IDs of a message by hand, then lets goflow2
// decode the records with the collector's templates.
func decodeIPFIX(b []byte, templates netflow.NetFlowTemplateSystem) ipfixMessage {
	m := ipfixMessage{at: time.Now()}
	if len(b) < 16 || binary.BigEndian.Uint16(b) != 10 {
		return m
	}
	for off := 16; off+4 <= len(b); {
		id, l := binary.BigEndian.Uint16(b[off:]), int(binary.BigEndian.Uint16(b[off+2:]))
		m.sets = append(m.sets, id)
		if l < 4 {
			break
		}
		off += l
	}
	var v9 netflow.NFv9Packet
	var pkt netflow.IPFIXPacket
	if err := netflow.DecodeMessageVersion(bytes.NewBuffer(b), templates, &v9, &pkt); err != nil {
		return m
	}
	for _, fs := range pkt.FlowSets {
		ds, ok := fs.(netflow.DataFlowSet)
		if !ok {
			continue
		}
		for _, r := range ds.Records {
			for _, f := range r.Values {
				if v, ok := f.Value.([]byte); ok && f.Type == 7 && len(v) == 2 {
					m.sports = append(m.sports, binary.BigEndian.Uint16(v))
				}
			}
		}
	}
	return m
}

// churn sends a two-packet flow from a fresh (ephemeral) source port every 100 ms
// until stop closes. Errors are ignored: it runs beside the test.
func (l *testbed) churn(stop <-chan struct{}) {
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			_ = lab.InNetns(l.A, func() error {
				c, err := net.Dial("udp", net.JoinHostPort(addrB, strconv.Itoa(sinkPort)))
				if err != nil {
					return err
				}
				defer c.Close()
				for j := 0; j < 2; j++ {
					_, _ = c.Write(make([]byte, 16))
				}
				return nil
			})
		}
	}()
}

// waitTemplatesAndData waits for a template set from t0 on, then a
// message whose data records decode with it.
func waitTemplatesAndData(t *testing.T, a *agent, c *ipfixCollector, t0 time.Time, phase string) {
	t.Helper()
	a.waitFor(t, 20*time.Second, phase+": templates and decodable data", func(metrics) error {
		tmpl := false
		for _, m := range c.since(t0) {
			if m.hasSet(func(id uint16) bool { return id == 2 }) {
				tmpl = true
			}
			if tmpl && m.hasSet(func(id uint16) bool { return id >= 256 }) && len(m.sports) > 0 {
				return nil
			}
		}
		return fmt.Errorf("templates seen: %v", tmpl)
	})
}

// TestIPFIXCollectorAbsentAppearsRestarts exports while nothing listens,
// then while a collector listens, then across a collector restart on the
// same port. Must hold: the agent never stalls (records keep being
// exported, /metrics answers), failed sends are counted in
// rfm_errors_total{subsystem="ipfix"}, and after every (re)appearance the
// collector receives templates again and can decode data records.
func TestIPFIXCollectorAbsentAppearsRestarts(t *testing.T) {
	l := newLab(t)
	l.sink(t)
	a := startAgent(t, l.A, agentConfig{sampleRate: 1, eviction: "1s", ipfixPort: ipfixPort, templateRefresh: "60s"})
	stop := make(chan struct{})
	defer close(stop)
	l.churn(stop)

	errs := func(m metrics) float64 { return m.sum("rfm_errors_total", "subsystem", "ipfix") }
	records := func(m metrics) float64 { return m.sum("rfm_ipfix_records_total") }
	a.waitFor(t, 20*time.Second, "ipfix errors while the collector is absent", func(m metrics) error {
		if errs(m) == 0 {
			return errNotYet
		}
		return nil
	})

	t0 := time.Now()
	c := startIPFIXCollector(t, l.B)
	waitTemplatesAndData(t, a, c, t0, "collector appeared")
	before := records(a.mustScrape(t))

	c.close()
	e0 := errs(a.mustScrape(t))
	a.waitFor(t, 20*time.Second, "ipfix errors while the collector is down", func(m metrics) error {
		if errs(m) <= e0 {
			return errNotYet
		}
		return nil
	})
	t1 := time.Now()
	c.open()
	waitTemplatesAndData(t, a, c, t1, "collector restarted")
	a.waitFor(t, 10*time.Second, "records still counted", func(m metrics) error {
		if records(m) <= before {
			return fmt.Errorf("rfm_ipfix_records_total stuck at %v", records(m))
		}
		return nil
	})
}

// TestSIGTERMExportsActiveFlows stops the agent under load with flows
// still active. Must hold: exit status 0 within 5 s, and the IPFIX
// records received after the signal cover every flow that was active.
func TestSIGTERMExportsActiveFlows(t *testing.T) {
	l := newLab(t)
	l.sink(t)
	c := startIPFIXCollector(t, l.B)
	a := startAgent(t, l.A, agentConfig{sampleRate: 1, eviction: "30s", ipfixPort: ipfixPort})
	const flows, firstPort = 20, 31000
	for i := 0; i < flows; i++ {
		l.sendFlow(t, firstPort+i, 3, 32)
	}
	stop := make(chan struct{})
	wait := l.blast(t, 2, 21000, stop)
	defer func() { close(stop); wait() }()
	m := a.waitFor(t, 10*time.Second, "flows active", func(m metrics) error {
		if v := m.sum("rfm_collector_active_flows"); v < flows+2 {
			return fmt.Errorf("rfm_collector_active_flows = %v, want >= %d", v, flows+2)
		}
		return nil
	})
	active := int(m.sum("rfm_collector_active_flows"))

	t0 := time.Now()
	st, took := a.signal(t, syscall.SIGTERM, 5*time.Second)
	if !st.Success() {
		t.Errorf("exit after SIGTERM under load: %v", st)
	}
	t.Logf("SIGTERM to exit: %s; %d flows active before", took, active)

	// Exported records are in flight when the agent exits: give the
	// collector socket a moment, bounded.
	var got map[uint16]bool
	deadline := time.Now().Add(3 * time.Second)
	for {
		got = map[uint16]bool{}
		for _, msg := range c.since(t0) {
			for _, p := range msg.sports {
				got[p] = true
			}
		}
		if len(got) >= active || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var missing []int
	for i := 0; i < flows; i++ {
		if !got[uint16(firstPort+i)] {
			missing = append(missing, firstPort+i)
		}
	}
	if len(missing) > 0 {
		t.Errorf("flows from source ports %v were active at SIGTERM but never exported", missing)
	}
	if len(got) < active {
		t.Errorf("%d distinct flows exported after SIGTERM, %d were active", len(got), active)
	}
}
