// SPDX-License-Identifier: AGPL-3.0-only

package config

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/stepbrobd/rfm/internal/enrich/bmp"
	"github.com/stepbrobd/rfm/internal/enrich/rd"
)

// PrometheusAddr is the metrics listen address, e.g. "[::1]:9669".
func (c *Config) PrometheusAddr() string {
	return joinHostPort(c.Agent.Prometheus.Host, c.Agent.Prometheus.Port)
}

// CollectorAddr is the one-collector form's "host:port", or "" when it
// is not used. The host may be a name the exporter has to resolve.
func (c IPFIX) CollectorAddr() string {
	if c.Host == "" || c.Port == 0 {
		return ""
	}
	return joinHostPort(c.Host, c.Port)
}

// Addr is the local address to bind, e.g. "[2001:db8::1]:0"; with no host
// it is ":port" (":0" by default), which lets the kernel choose.
func (e Endpoint) Addr() string {
	return joinHostPort(e.Host, e.Port)
}

// ListenAddr is the BMP listen "host:port", or "" when the listener is
// disabled.
func (c BMP) ListenAddr() string {
	if !c.Enabled() {
		return ""
	}
	return joinHostPort(c.Host, c.Port)
}

// AllowPrefixes returns the allow list as bmp.ParseAllow reads it; nil
// means every router may connect.
func (c BMP) AllowPrefixes() ([]netip.Prefix, *Error) {
	if len(c.Allow) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, 0, len(c.Allow))
	for i, s := range c.Allow {
		p, ok := bmp.ParseAllow(s)
		if !ok {
			return nil, keyError(fmt.Sprintf("agent.enrich.rib.bmp.allow[%d]", i), s,
				`must be an IP prefix such as "192.0.2.0/24" or a single IP address`)
		}
		out = append(out, p)
	}
	return out, nil
}

// Station is the BMP station's configuration.
func (c BMP) Station() (bmp.Config, error) {
	allow, e := c.AllowPrefixes()
	if e != nil {
		return bmp.Config{}, e
	}
	labels, e := c.LabelDistinguishers()
	if e != nil {
		return bmp.Config{}, e
	}
	return bmp.Config{
		Host:             c.Host,
		Port:             c.Port,
		Allow:            allow,
		MaxSessions:      c.MaxSessions,
		MaxMessageSize:   c.MaxMessageSize,
		MaxRoutesPerPeer: c.MaxRoutesPerPeer,
		LabelVRFs:        labels,
	}, nil
}

// LabelDistinguishers returns label_vrfs as distinguisher values.
func (c BMP) LabelDistinguishers() ([]uint64, *Error) {
	var out []uint64
	for i, s := range c.LabelVRFs {
		d, err := rd.Parse(s)
		if err != nil {
			return nil, keyError(fmt.Sprintf("agent.enrich.rib.bmp.label_vrfs[%d]", i), s,
				`must be a route distinguisher such as "65000:1" or "192.0.2.1:5"`)
		}
		out = append(out, d)
	}
	return out, nil
}

// joinHostPort is net.JoinHostPort that also accepts "[v6]" hosts, which
// hand-built configs may hold (Parse removes the brackets).
func joinHostPort(host string, port int) string {
	if inner, ok := bracketedIPv6(host); ok {
		host = inner
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// Encode writes c as TOML. For a config from Parse this is the effective
// config, every default filled in, and it parses back to the same value.
func (c *Config) Encode(w io.Writer) error {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.Indent = ""
	if err := enc.Encode(c); err != nil {
		return fmt.Errorf("encoding config: %w", err)
	}
	if _, err := w.Write(spaceTables(buf.Bytes())); err != nil {
		return fmt.Errorf("writing config: %w", err)
	}
	return nil
}

// spaceTables lays the encoder's output out like the spec's example: a
// blank line before each table, and no header for a table that holds
// only sub-tables ([agent.enrich] before [agent.enrich.mmdb]). The
// encoder escapes line breaks inside strings, so every line starting with
// '[' is a table header.
func spaceTables(doc []byte) []byte {
	lines := strings.Split(strings.TrimRight(string(doc), "\n"), "\n")
	var b strings.Builder
	for i, line := range lines {
		if header, ok := tableHeader(line); ok {
			if i+1 < len(lines) {
				if next, ok := tableHeader(lines[i+1]); ok && strings.HasPrefix(next, header+".") {
					continue
				}
			}
			if b.Len() > 0 {
				b.WriteString("\n")
			}
		}
		b.WriteString(line)
		b.WriteString("\n")
	}
	return []byte(b.String())
}

func tableHeader(line string) (string, bool) {
	if len(line) < 2 || line[0] != '[' || line[len(line)-1] != ']' {
		return "", false
	}
	return line[1 : len(line)-1], true
}

// String returns c as TOML (see Encode).
func (c *Config) String() string {
	var b strings.Builder
	if err := c.Encode(&b); err != nil {
		return err.Error()
	}
	return b.String()
}
