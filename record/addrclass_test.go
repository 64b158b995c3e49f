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
