// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/export/prom"
	"github.com/stepbrobd/rfm/internal/flow"
)

type noDatapath struct{}

func (noDatapath) Counters() ([]datapath.Counters, error) { return nil, nil }
func (noDatapath) Stats() (datapath.Stats, error)         { return datapath.Stats{}, nil }
func (noDatapath) DecodeErrors() uint64                   { return 0 }
func (noDatapath) Interfaces() []datapath.Interface       { return nil }

func testMetricsConfig(webConfig string) *config.Config {
	return &config.Config{Agent: config.Agent{Prometheus: config.Prometheus{Host: "127.0.0.1", Port: 0, WebConfig: webConfig}}}
}

func writeWebConfig(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// selfSigned writes a certificate and key for 127.0.0.1 into dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rfm test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestMetricsWebConfigReloadSameSocket: a reload that changes only
// agent.prometheus.web_config keeps the listening socket: binding the
// same address again fails while the old listener is open (what a
// reload did before), while handing the socket to a server with the new
// settings works, and a client opening a new connection for every
// request all along never sees an error. Then plain HTTP becomes HTTPS
// on the same port, and a web config whose certificate is missing is
// refused with the key named while the running server keeps answering.
func TestMetricsWebConfigReloadSameSocket(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	deny := writeWebConfig(t, dir, "deny.yml", "http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
	same := writeWebConfig(t, dir, "same.yml", "http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n")

	tab := flow.NewTable(flow.Options{})
	core := prom.New(noDatapath{}, tab, func() uint32 { return 1 })
	reg := prometheus.NewRegistry()
	reg.MustRegister(core)
	healthy := func() error { return nil }

	m, err := listenMetrics(testMetricsConfig(deny), log)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.serve(reg, core, healthy); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.close() })
	addr := m.ln.ln.Addr().String()

	// The old way: a second listener on the same address.
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("binding %s twice succeeded; the test cannot show the problem", addr)
	}

	// Clients requesting all through the swap.
	plain := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	get := func(c *http.Client, url string) (string, error) {
		resp, err := c.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return "", err
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return resp.Header.Get("X-Frame-Options"), nil
	}
	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
		requests int
		seen     = map[string]int{}
	)
	// Several clients, so connections are in flight at the handover; two
	// keep their connections alive, as Prometheus does.
	for i := range 4 {
		c := plain
		if i%2 == 1 {
			c = &http.Client{Timeout: 5 * time.Second}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				h, err := get(c, "http://"+addr+"/healthz")
				mu.Lock()
				requests++
				if err != nil {
					failures = append(failures, err.Error())
				} else {
					seen[h]++
				}
				mu.Unlock()
			}
		}()
	}
	waitRequests := func(n int) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			r := requests
			mu.Unlock()
			if r >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d requests in 10s", r)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitRequests(20)
	next, err := m.withWebConfig(same)
	if err != nil {
		t.Fatal(err)
	}
	if err := next.serve(reg, core, healthy); err != nil {
		t.Fatalf("serve with the new web config: %v", err)
	}
	m.retire()
	m = next
	mu.Lock()
	after := requests
	mu.Unlock()
	waitRequests(after + 20)
	stop.Store(true)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed across the swap, first: %s", len(failures), requests, failures[0])
	}
	if seen["deny"] == 0 || seen["sameorigin"] == 0 {
		t.Fatalf("responses by X-Frame-Options: %v; want both the old and the new settings", seen)
	}
	if h, err := get(plain, "http://"+addr+"/healthz"); err != nil || h != "sameorigin" {
		t.Fatalf("after the swap: X-Frame-Options %q, err %v; want sameorigin", h, err)
	}

	// Plain HTTP to HTTPS on the same port.
	cert, key := selfSigned(t, dir)
	tlsCfg := writeWebConfig(t, dir, "tls.yml", fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n", cert, key))
	next, err = m.withWebConfig(tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := next.serve(reg, core, healthy); err != nil {
		t.Fatalf("serve with TLS: %v", err)
	}
	m.retire()
	m = next
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(cert)
	pool.AppendCertsFromPEM(pem)
	secure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}, Timeout: 5 * time.Second}
	if _, err := get(secure, "https://"+addr+"/metrics"); err != nil {
		t.Fatalf("HTTPS after the reload: %v", err)
	}

	// A web config that cannot be had: refused, one line naming the key,
	// and the TLS server keeps answering.
	broken := writeWebConfig(t, dir, "broken.yml", "tls_server_config:\n  cert_file: /nonexistent/cert.pem\n  key_file: /nonexistent/key.pem\n")
	if _, err := m.withWebConfig(broken); err == nil {
		t.Fatal("a web config with a missing certificate was accepted")
	} else if msg := err.Error(); !strings.HasPrefix(msg, "agent.prometheus.web_config "+broken) || strings.Contains(msg, "\n") {
		t.Fatalf("error %q: want one line naming agent.prometheus.web_config and the file", msg)
	}
	if _, err := get(secure, "https://"+addr+"/metrics"); err != nil {
		t.Fatalf("HTTPS after the refused reload: %v", err)
	}
}
