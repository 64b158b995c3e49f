package record

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// TestPublishable proves the address rule: each class that is never
// published is refused with its class and a message naming it, loopback
// only without the opt-in, mapped IPv4 judged as IPv4, and global and
// private unicast addresses of both families pass.
func TestPublishable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr     string // "" for the zero Addr
		class    string // without the loopback opt-in
		classOpt string // with it
		words    string // in the error message
	}{
		{"192.0.2.10", "", "", ""},
		{"10.1.2.3", "", "", ""},
		{"2001:db8::10", "", "", ""},
		{"fd00::1", "", "", ""},
		{"::ffff:198.51.100.7", "", "", ""},
		{"127.0.0.1", ClassLoopback, "", "loopback"},
		{"127.255.255.254", ClassLoopback, "", "loopback"},
		{"::1", ClassLoopback, "", "loopback"},
		{"::ffff:127.0.0.1", ClassLoopback, "", "loopback"},
		{"169.254.1.1", ClassLinkLocal, ClassLinkLocal, "link-local"},
		{"fe80::1", ClassLinkLocal, ClassLinkLocal, "link-local"},
		{"fe80::1%eth0", ClassLinkLocal, ClassLinkLocal, "link-local"},
		{"febf::1", ClassLinkLocal, ClassLinkLocal, "link-local"},
		{"0.0.0.0", ClassUnspecified, ClassUnspecified, "unspecified"},
		{"::", ClassUnspecified, ClassUnspecified, "unspecified"},
		{"::ffff:0.0.0.0", ClassUnspecified, ClassUnspecified, "unspecified"},
		{"224.0.0.1", ClassMulticast, ClassMulticast, "multicast"},
		{"239.255.255.250", ClassMulticast, ClassMulticast, "multicast"},
		{"ff02::1", ClassMulticast, ClassMulticast, "multicast"},
		{"ff05::2", ClassMulticast, ClassMulticast, "multicast"},
		{"", ClassInvalid, ClassInvalid, "not a valid"},
		{"100.100.100.200", ClassMetadata, ClassMetadata, "metadata"},
		{"::ffff:100.100.100.200", ClassMetadata, ClassMetadata, "metadata"},
		{"fd00:ec2::254", ClassMetadata, ClassMetadata, "metadata"},
		{"fd00:ec2::254%eth0", ClassMetadata, ClassMetadata, "metadata"},
		{"fd00:ec2::253", ClassMetadata, ClassMetadata, "metadata"},
		{"168.63.129.16", ClassMetadata, ClassMetadata, "metadata"},
		{"fd20:ce::254", ClassMetadata, ClassMetadata, "metadata"},
		{"100.100.100.201", "", "", ""},
		{"fd00:ec2::255", "", "", ""},
	}
	for _, tc := range tests {
		var a netip.Addr
		if tc.addr != "" {
			a = netip.MustParseAddr(tc.addr)
		}
		for _, opt := range []bool{false, true} {
			want := tc.class
			if opt {
				want = tc.classOpt
			}
			if got := AddrClass(a, opt); got != want {
				t.Errorf("AddrClass(%s, allowLoopback=%v) = %q, want %q", tc.addr, opt, got, want)
			}
			err := Publishable(a, opt)
			if want == "" {
				if err != nil {
					t.Errorf("Publishable(%s, %v) = %v, want nil", tc.addr, opt, err)
				}
				continue
			}
			var ce *AddrClassError
			if !errors.As(err, &ce) || ce.Class != want || !strings.Contains(err.Error(), tc.words) {
				t.Errorf("Publishable(%s, %v) = %v, want an *AddrClassError of class %s mentioning %q", tc.addr, opt, err, want, tc.words)
			}
		}
	}
}

// TestAddrClassesSnakeCase proves every class is a snake_case metric label
// value.
func TestAddrClassesSnakeCase(t *testing.T) {
	t.Parallel()
	for _, c := range []string{ClassInvalid, ClassUnspecified, ClassLoopback, ClassLinkLocal, ClassMulticast} {
		for _, r := range c {
			if !(r >= 'a' && r <= 'z' || r == '_') {
				t.Errorf("class %q is not snake_case", c)
				break
			}
		}
	}
}

// TestDenyList proves the operator's deny list: CIDRs and single addresses
// of both families, mapped IPv4 judged as IPv4 on either side, the
// address classes first, and a clear error for anything else.
func TestDenyList(t *testing.T) {
	t.Parallel()
	d, err := ParseDenyList([]string{"10.0.0.0/8", " 192.0.2.7 ", "2001:db8:1::/48", "::ffff:198.51.100.0/120", ""})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{
		"10.1.2.3": ClassDenied, "::ffff:10.9.9.9": ClassDenied, "192.0.2.7": ClassDenied,
		"192.0.2.8": "", "2001:db8:1::5": ClassDenied, "2001:db8:2::5": "", "198.51.100.77": ClassDenied,
		"11.0.0.1": "", "127.0.0.1": ClassLoopback, "100.100.100.200": ClassMetadata,
	} {
		if got := d.Class(netip.MustParseAddr(addr), false); got != want {
			t.Errorf("Class(%s) = %q, want %q", addr, got, want)
		}
		err := d.Publishable(netip.MustParseAddr(addr), false)
		var ce *AddrClassError
		if (want == "") != (err == nil) || err != nil && (!errors.As(err, &ce) || ce.Class != want) {
			t.Errorf("Publishable(%s) = %v, want class %q", addr, err, want)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "example.org", "10.0.0.0/8/8", "fe80::1%eth0"} {
		if _, err := ParseDenyList([]string{bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("ParseDenyList(%q) = %v, want an error naming it", bad, err)
		}
	}
}
