// SPDX-License-Identifier: AGPL-3.0-only

// Package rd reads and writes BGP route distinguishers (RFC 4364
// section 4.2), the form BMP peer distinguishers take for VRF peers and
// Loc-RIBs (RFC 7854 4.2, RFC 9069 4.1).
package rd

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Format renders a distinguisher: type 0 "ASN:n" (2-byte ASN), type 1
// "IPv4:n", type 2 "ASN:n" (4-byte ASN); other types as 16 hex digits.
func Format(d uint64) string {
	switch d >> 48 {
	case 0:
		return fmt.Sprintf("%d:%d", (d>>32)&0xffff, d&0xffffffff)
	case 1:
		ip := netip.AddrFrom4([4]byte{byte(d >> 40), byte(d >> 32), byte(d >> 24), byte(d >> 16)})
		return fmt.Sprintf("%s:%d", ip, d&0xffff)
	case 2:
		return fmt.Sprintf("%d:%d", (d>>16)&0xffffffff, d&0xffff)
	}
	return fmt.Sprintf("%#016x", d)
}

// Parse reads what Format writes. "ASN:n" is type 0 when the ASN fits
// in 2 bytes, else type 2 (whose number must then fit in 2 bytes).
// A leading "0x" reads 16 hex digits as they are.
func Parse(s string) (uint64, error) {
	if h, ok := strings.CutPrefix(s, "0x"); ok {
		if len(h) != 16 {
			return 0, fmt.Errorf("route distinguisher %q: want 16 hex digits after 0x", s)
		}
		return strconv.ParseUint(h, 16, 64)
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return 0, fmt.Errorf("route distinguisher %q: want ASN:number or IPv4:number", s)
	}
	admin, num := s[:i], s[i+1:]
	if ip, err := netip.ParseAddr(admin); err == nil {
		if !ip.Is4() {
			return 0, fmt.Errorf("route distinguisher %q: the address must be IPv4", s)
		}
		n, err := strconv.ParseUint(num, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("route distinguisher %q: number after an IPv4 address must be 0..65535", s)
		}
		b := ip.As4()
		return 1<<48 | uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | n, nil
	}
	asn, err := strconv.ParseUint(admin, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("route distinguisher %q: want ASN:number or IPv4:number", s)
	}
	if asn <= 0xffff {
		n, err := strconv.ParseUint(num, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("route distinguisher %q: number after a 2-byte ASN must be 0..4294967295", s)
		}
		return asn<<32 | n, nil
	}
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("route distinguisher %q: number after a 4-byte ASN must be 0..65535", s)
	}
	return 2<<48 | asn<<16 | n, nil
}
