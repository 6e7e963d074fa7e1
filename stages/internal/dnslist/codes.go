// Package dnslist reads the answers of DNS block- and allow-lists (RFC
// 5782): which return Codes count as a listing, and which answers are no
// listing at all. The dnsbl and spam (URIBL) kinds share it.
package dnslist

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// Codes says which answers of a DNS list count as a listing: address
// ranges and a bit mask (lists such as SURBL's multi encode several lists
// in the bits of one answer).
type Codes struct {
	ranges [][2]uint32 // inclusive
	mask   uint32
}

// ParseCodes reads "127.0.0.2" and "127.0.0.4-127.0.0.7" entries. Without
// ranges or mask, every listing code counts.
func ParseCodes(returns []string, mask uint32) (Codes, error) {
	c := Codes{mask: mask}
	for i, r := range returns {
		rg, err := ParseRange(r)
		if err != nil {
			return Codes{}, fmt.Errorf("returns[%d]: %w", i, err)
		}
		c.ranges = append(c.ranges, rg)
	}
	if len(c.ranges) == 0 && mask == 0 {
		c.ranges = [][2]uint32{{0x7f000002, 0x7ffffeff}}
	}
	return c, nil
}

// ParseRange reads "127.0.0.2" or "127.0.0.4-127.0.0.7".
func ParseRange(r string) ([2]uint32, error) {
	lo, hi, isRange := strings.Cut(r, "-")
	a, err := codeOf(lo)
	b := a
	if err == nil && isRange {
		b, err = codeOf(hi)
	}
	if err != nil || b < a {
		return [2]uint32{}, fmt.Errorf("unexpected %q; expect an address in 127.0.0.0/8 such as \"127.0.0.2\", or a range such as \"127.0.0.4-127.0.0.7\"", r)
	}
	return [2]uint32{a, b}, nil
}

func codeOf(s string) (uint32, error) {
	ip, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || !ip.Is4() || ip.As4()[0] != 127 {
		return 0, fmt.Errorf("not in 127.0.0.0/8: %q", s)
	}
	return U32(ip), nil
}

// U32 is an IPv4 address as a number.
func U32(ip netip.Addr) uint32 {
	b := ip.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// Match reports whether a listing code counts.
func (c Codes) Match(ip netip.Addr) bool {
	v := U32(ip)
	for _, r := range c.ranges {
		if v >= r[0] && v <= r[1] {
			return true
		}
	}
	return v&c.mask != 0
}

// ValidCode reports whether an answer is a listing code at all. RFC 5782
// §2.1 puts Codes in 127.0.0.0/8; 127.0.0.1 is never a listing (§5) and
// some lists use it for "query refused", as Spamhaus uses 127.255.255.0/24.
// Anything else (a wildcarding resolver's ad server, an error code) says
// nothing about the name.
func ValidCode(ip netip.Addr) bool {
	if !ip.Is4() {
		return false
	}
	b := ip.As4()
	return b[0] == 127 && U32(ip) != 0x7f000001 && !(b[1] == 255 && b[2] == 255)
}

// Listed returns the addresses of the A records in rrs, an answer of the
// list, that count as a listing, in the order they came. An answer that is
// no listing code at all (see ValidCode) makes the whole answer an error:
// the list, or the resolver in front of it, is not answering as a list.
func (c Codes) Listed(rrs []dns.RR) ([]netip.Addr, error) {
	var listed []netip.Addr
	for _, rr := range rrs {
		rec, ok := rr.(*dns.A)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(rec.A)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if !ValidCode(ip) {
			return nil, fmt.Errorf("answer %s is not a listing code", ip)
		}
		if c.Match(ip) {
			listed = append(listed, ip)
		}
	}
	return listed, nil
}
