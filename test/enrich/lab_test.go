package enrich

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/stepbrobd/rfm/test/lab"
)

// Lab addresses. Namespace A holds the agent, both routers and the
// sender; B holds the receiver of the test traffic.
var (
	ipA   = netip.MustParseAddr("198.18.0.1")
	ipB   = netip.MustParseAddr("198.18.0.2")
	dstIP = netip.MustParseAddr("198.19.1.5") // on B's loopback, routed via ipB
	macA  = net.HardwareAddr{0x02, 0x52, 0x46, 0x45, 0x00, 0x01}
	macB  = net.HardwareAddr{0x02, 0x52, 0x46, 0x45, 0x00, 0x02}
)

// testbed is namespaces nsA and nsB joined by the veth vethA/vethB.
type testbed struct {
	nsA, nsB     string
	vethA, vethB string
}

// newLab builds two quiet namespaces joined by a veth and removes them
// when the test ends, then routes 198.19.0.0/16 from A to B's loopback.
func newLab(t *testing.T) *testbed {
	t.Helper()
	pid := os.Getpid()
	l := &testbed{
		nsA:   fmt.Sprintf("rfme-%d-a", pid),
		nsB:   fmt.Sprintf("rfme-%d-b", pid),
		vethA: fmt.Sprintf("rfmea%d", pid%100000),
		vethB: fmt.Sprintf("rfmeb%d", pid%100000),
	}
	lab.NewPair(t, lab.PairOptions{
		NsA: l.nsA, NsB: l.nsB, DevA: l.vethA, DevB: l.vethB, MACA: macA, MACB: macB,
		Addrs: [][2]netip.Prefix{{netip.PrefixFrom(ipA, 24), netip.PrefixFrom(ipB, 24)}},
	})
	lab.Run(t, "ip", "-n", l.nsA, "route", "add", "198.19.0.0/16", "via", ipB.String(), "dev", l.vethA)
	lab.Run(t, "ip", "-n", l.nsB, "addr", "add", dstIP.String()+"/32", "dev", "lo")
	return l
}

// sample is one line of the Prometheus text format.
type sample = lab.Sample

// parseMetrics reads the text exposition format.
func parseMetrics(r io.Reader) ([]sample, error) { return lab.ParseMetrics(r) }

// scrape is one /metrics response, kept raw for failure messages.
type scrape struct {
	raw     string
	samples []sample
}

// find returns the samples named name whose labels include want.
func (s scrape) find(name string, want map[string]string) []sample {
	var out []sample
next:
	for _, x := range s.samples {
		if x.Name != name {
			continue
		}
		for k, v := range want {
			if x.Labels[k] != v {
				continue next
			}
		}
		out = append(out, x)
	}
	return out
}

// grep returns the raw lines starting with prefix, for failure messages.
func (s scrape) grep(prefixes ...string) string {
	var b strings.Builder
	for _, line := range strings.Split(s.raw, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				b.WriteString(line + "\n")
				break
			}
		}
	}
	return b.String()
}

// writeMMDB writes a database with one record per prefix.
func writeMMDB(t *testing.T, path, dbType string, records map[string]mmdbtype.Map) {
	t.Helper()
	if err := lab.WriteMMDB(path, dbType, records); err != nil {
		t.Fatal(err)
	}
}

// proc is a long-running process of the test (agent, router); output
// goes to a file shown when the test fails.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	stopped chan struct{}
	once    sync.Once
}

func startProc(t *testing.T, dir, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, logPath: filepath.Join(dir, name+".log"), stopped: make(chan struct{})}
	out, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); out.Close(); close(p.stopped) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			t.Logf("%s output (last lines):\n%s", name, lastLines(string(b), 30))
		}
	})
	return p
}

// stop sends SIGTERM and waits, killing after 5s.
func (p *proc) stop() {
	p.once.Do(func() {
		select {
		case <-p.stopped:
			return
		default:
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.stopped:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.stopped
		}
	})
}

// kill ends the process with SIGKILL, so it cannot say goodbye.
func (p *proc) kill() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		<-p.stopped
	})
}

func (p *proc) exited() bool {
	select {
	case <-p.stopped:
		return true
	default:
		return false
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
