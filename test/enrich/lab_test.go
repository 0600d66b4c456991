package enrich

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"golang.org/x/sys/unix"
)

// Lab addresses. Namespace A holds the agent, both routers and the
// sender; B holds the receiver of the test traffic.
var (
	ipA    = netip.MustParseAddr("198.18.0.1")
	ipB    = netip.MustParseAddr("198.18.0.2")
	dstIP  = netip.MustParseAddr("198.19.1.5") // on B's loopback, routed via ipB
	macA   = net.HardwareAddr{0x02, 0x52, 0x46, 0x45, 0x00, 0x01}
	macB   = net.HardwareAddr{0x02, 0x52, 0x46, 0x45, 0x00, 0x02}
	quietV = []string{"accept_dad=0", "accept_ra=0", "router_solicitations=0", "addr_gen_mode=1"}
)

type lab struct {
	nsA, nsB     string
	vethA, vethB string
}

// run executes a command, failing the test with its output on error.
func run(t testing.TB, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}

// newLab builds two quiet namespaces joined by a veth and removes them
// when the test ends. Quiet: no DAD/RA/RS/link-local, permanent
// neighbours, NOARP (no ARP and no MLD), offloads off for exact counts.
func newLab(t *testing.T) *lab {
	t.Helper()
	pid := os.Getpid()
	l := &lab{
		nsA:   fmt.Sprintf("rfme-%d-a", pid),
		nsB:   fmt.Sprintf("rfme-%d-b", pid),
		vethA: fmt.Sprintf("rfmea%d", pid%100000),
		vethB: fmt.Sprintf("rfmeb%d", pid%100000),
	}
	for _, ns := range []string{l.nsA, l.nsB} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Logf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
		// Before the veth exists, so its ends inherit the defaults.
		for _, conf := range []string{"all", "default"} {
			for _, kv := range quietV {
				run(t, "ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf."+conf+"."+kv)
			}
		}
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "link", "add", l.vethA, "netns", l.nsA, "address", macA.String(),
		"type", "veth", "peer", "name", l.vethB, "netns", l.nsB, "address", macB.String())
	for _, side := range []struct {
		ns, dev, ip, peerIP string
		peerMAC             net.HardwareAddr
	}{
		{l.nsA, l.vethA, ipA.String(), ipB.String(), macB},
		{l.nsB, l.vethB, ipB.String(), ipA.String(), macA},
	} {
		run(t, "ip", "netns", "exec", side.ns, "ethtool", "-K", side.dev, "gro", "off", "gso", "off", "tso", "off")
		run(t, "ip", "-n", side.ns, "link", "set", side.dev, "arp", "off")
		run(t, "ip", "-n", side.ns, "addr", "add", side.ip+"/24", "dev", side.dev)
		run(t, "ip", "-n", side.ns, "link", "set", side.dev, "up")
		run(t, "ip", "-n", side.ns, "neigh", "replace", side.peerIP, "lladdr", side.peerMAC.String(),
			"dev", side.dev, "nud", "permanent")
	}
	run(t, "ip", "-n", l.nsA, "route", "add", "198.19.0.0/16", "via", ipB.String(), "dev", l.vethA)
	run(t, "ip", "-n", l.nsB, "addr", "add", dstIP.String()+"/32", "dev", "lo")
	return l
}

// inNS runs f on an OS thread switched into namespace ns; sockets f
// creates stay in that namespace. The thread is discarded if it cannot
// be switched back.
func inNS(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(filepath.Join("/run/netns", ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: the runtime ends it with the goroutine.
			errc <- fmt.Errorf("setns back from %s: %w", ns, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// metricsClient scrapes an HTTP endpoint inside namespace ns.
func metricsClient(ns string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNS(ns, func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseMetrics reads the text exposition format; label values in this
// test never hold escaped quotes, but escapes are handled anyway.
func parseMetrics(r io.Reader) ([]sample, error) {
	var out []sample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexAny(line, "{ "); i >= 0 && line[i] == '{' {
			s.name = line[:i]
			rest = line[i+1:]
			for {
				if strings.HasPrefix(rest, "}") {
					rest = rest[1:]
					break
				}
				eq := strings.Index(rest, "=\"")
				if eq < 0 {
					return nil, fmt.Errorf("metrics line %q: bad labels", line)
				}
				key := rest[:eq]
				rest = rest[eq+2:]
				var val strings.Builder
				for len(rest) > 0 && rest[0] != '"' {
					if rest[0] == '\\' && len(rest) > 1 {
						switch rest[1] {
						case 'n':
							val.WriteByte('\n')
						default:
							val.WriteByte(rest[1])
						}
						rest = rest[2:]
						continue
					}
					val.WriteByte(rest[0])
					rest = rest[1:]
				}
				if len(rest) == 0 {
					return nil, fmt.Errorf("metrics line %q: unterminated label value", line)
				}
				rest = strings.TrimPrefix(rest[1:], ",")
				s.labels[key] = val.String()
			}
		} else if i >= 0 {
			s.name, rest = line[:i], line[i:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: value: %w", line, err)
		}
		s.value = v
		out = append(out, s)
	}
	return out, sc.Err()
}

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
		if x.name != name {
			continue
		}
		for k, v := range want {
			if x.labels[k] != v {
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
	w, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: dbType, IncludeReservedNetworks: true, RecordSize: 24})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, rec := range records {
		_, ipn, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Insert(ipn, rec); err != nil {
			t.Fatalf("mmdb insert %s: %v", cidr, err)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
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
