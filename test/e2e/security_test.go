// SPDX-License-Identifier: AGPL-3.0-only

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/stepbrobd/rfm/test/lab"
)

// TestMetricsTLSAndBasicAuth: with agent.prometheus.web_config the
// metrics endpoint speaks only TLS and refuses requests without the
// configured user.
func TestMetricsTLSAndBasicAuth(t *testing.T) {
	l := newLab(t, labOptions{})
	dir := t.TempDir()
	certFile, keyFile, pool := selfSignedCert(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(dir, "web.yml")
	writeFile(t, webConfig, fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  prom: %s\n", certFile, keyFile, hash))
	cfg := agentConfig{interfaces: []string{l.vethA}, sampleRate: 1}.toml() +
		fmt.Sprintf("web_config = %q\n", webConfig) // last table of the config is [agent.prometheus]
	path := writeConfig(t, cfg)

	a := lab.Start(t, "agent", l.nsA, rfmBin, "agent", "-c", path)

	tlsClient := lab.HTTPClient(l.nsA, 0)
	tlsClient.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool, ServerName: "rfm.test"}
	url := fmt.Sprintf("https://127.0.0.1:%d/metrics", metricsPort)
	get := func(c *http.Client, url, user, pass string) (int, string, error) {
		req, _ := http.NewRequest("GET", url, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	lab.Eventually(t, 20*time.Second, "TLS metrics endpoint up", func() error {
		select {
		case <-a.Done():
			t.Fatalf("agent exited: %s", a.Output())
		default:
		}
		_, _, err := get(tlsClient, url, "prom", "s3cret")
		return err
	})

	if code, body, err := get(tlsClient, url, "prom", "s3cret"); err != nil || code != 200 || !strings.Contains(body, "rfm_interface_attached") {
		t.Errorf("with credentials: %d %v", code, err)
	}
	if code, _, err := get(tlsClient, url, "", ""); err != nil || code != http.StatusUnauthorized {
		t.Errorf("without credentials: status %d, err %v; want 401", code, err)
	}
	if code, _, err := get(tlsClient, url, "prom", "wrong"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("wrong password: status %d, err %v; want 401", code, err)
	}
	plain := lab.HTTPClient(l.nsA, 0)
	if code, _, err := get(plain, strings.Replace(url, "https", "http", 1), "prom", "s3cret"); err == nil && code == 200 {
		t.Errorf("plain HTTP served metrics although TLS is configured")
	}
}

// TestUnsafeFilesRefused: a world-writable config file, and a web config
// that does not parse, stop the agent at start with one line naming them
// and nothing attached.
func TestUnsafeFilesRefused(t *testing.T) {
	l := newLab(t, labOptions{})
	base := agentConfig{interfaces: []string{l.vethA}, sampleRate: 1}.toml()

	worldWritable := writeConfig(t, base)
	if err := os.Chmod(worldWritable, 0o666); err != nil {
		t.Fatal(err)
	}
	badWeb := filepath.Join(t.TempDir(), "web.yml")
	writeFile(t, badWeb, "tls_server_config:\n  cert_file: /nonexistent.crt\n")
	withBadWeb := writeConfig(t, base+fmt.Sprintf("web_config = %q\n", badWeb))

	for _, tc := range []struct {
		name, path string
		want       []string
	}{
		{"world-writable config", worldWritable, []string{worldWritable, "writable by every user"}},
		{"bad web config", withBadWeb, []string{"agent.prometheus.web_config", badWeb}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.nsA, rfmBin, "agent", "-c", tc.path).CombinedOutput()
			if err == nil {
				t.Fatalf("agent started; output:\n%s", out)
			}
			text := strings.TrimSpace(string(out))
			if strings.Count(text, "\n") != 0 {
				t.Errorf("want one line, got:\n%s", text)
			}
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("error %q does not name %q", text, w)
				}
			}
			idx := ifindex(t, l.nsA, l.vethA)
			if in, eg := lab.AttachedPrograms(t, l.nsA, idx); in+eg != 0 {
				t.Errorf("%d programs left attached", in+eg)
			}
		})
	}
}

func writeFile(t testing.TB, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// selfSignedCert writes a certificate for "rfm.test" and 127.0.0.1 and
// returns its files and a pool trusting it.
func selfSignedCert(t testing.TB, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "rfm.test"},
		DNSNames:     []string{"rfm.test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "rfm.crt"), filepath.Join(dir, "rfm.key")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
