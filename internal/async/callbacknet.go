package async

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// Callbacks are posted by the server, from its own network, to a URL that a
// tenant chose. So that a tenant cannot make the server post to what only
// the server can reach (its loopback, the machine's private networks, a
// cloud's metadata address), a callback may not reach a loopback,
// private, link-local, shared (CGNAT), unspecified or multicast address,
// but for the networks the operator allows (gust server --callback-allow).
// The check is made on the address dialled, after DNS and on every
// redirect, so that a name that resolves to such an address is refused too;
// callbacks go direct, never through HTTP_PROXY.

// internalNets are the networks callbacks may not reach unless allowed,
// beyond what netip.Addr's predicates name.
var internalNets = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),  // shared address space (RFC 6598)
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
	netip.MustParsePrefix("fec0::/10"),      // site-local (deprecated, still routed by some)
}

// Prefixes of IPv6 addresses that carry an IPv4 address, which is checked
// as well: NAT64's well-known prefix (the last 32 bits) and 6to4 (bits 16
// to 47).
var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
)

// embeddedIPv4 returns the IPv4 address inside a NAT64 or 6to4 address.
func embeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
	b := ip.As16()
	switch {
	case nat64.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixTo4.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// callbackNet decides which addresses callbacks may reach.
type callbackNet struct {
	allow []netip.Prefix
}

// check returns why ip may not be reached, or nil.
func (c callbackNet) check(ip netip.Addr) error {
	ip = ip.Unmap()
	for _, p := range c.allow {
		if p.Contains(ip) {
			return nil
		}
	}
	if inner, ok := embeddedIPv4(ip); ok {
		if err := c.check(inner); err != nil {
			return fmt.Errorf("callback address %s carries %s: %w", ip, inner, err)
		}
	}
	internal := ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified()
	for _, p := range internalNets {
		internal = internal || p.Contains(ip)
	}
	if internal {
		return fmt.Errorf("callback address %s is in a loopback, private or link-local network, which callbacks may not reach (the operator can allow a network with gust server --callback-allow)", ip)
	}
	return nil
}

// checkURL reports what is wrong with a callback URL: not http(s), too
// long, or an IP address that callbacks may not reach. A name is checked
// when it is dialled.
func (c callbackNet) checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || len(raw) > 2048 {
		return fmt.Errorf("X-Callback-Url %q is not an http:// or https:// URL", raw)
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil {
		if err := c.check(ip); err != nil {
			return fmt.Errorf("X-Callback-Url %q: %w", raw, err)
		}
	}
	return nil
}

// client returns an HTTP client whose connections are checked.
func (c callbackNet) client() *http.Client {
	dialer := &net.Dialer{
		Timeout: callbackTimeout,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			return c.check(ap.Addr())
		},
	}
	// No proxy: the check must see the address the callback reaches, and
	// a proxy would reach it unchecked.
	transport := &http.Transport{
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
	}
	return &http.Client{Timeout: callbackTimeout, Transport: transport}
}
