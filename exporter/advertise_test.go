package exporter

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// TestDetectAdvertiseAddrs proves, on this machine, that with the opt-in
// the default advertise address is the source address towards Consul for
// each form a Consul address takes, with no twin where the other family has
// no global address (loopback's ::1 is not one); that without it a loopback
// Consul gives a routable address of this machine or an error naming
// --advertise-addr, never loopback; and that a unix socket asks for the
// flag.
func TestDetectAdvertiseAddrs(t *testing.T) {
	t.Parallel()
	for _, consul := range []string{"127.0.0.1:8500", "127.0.0.1", "http://127.0.0.1:8500", "https://127.0.0.1"} {
		got, err := DetectAdvertiseAddrs(consul, true)
		if err != nil || !slices.Equal(got, []netip.Addr{loopback}) {
			t.Errorf("%s, loopback allowed: %v %v, want [127.0.0.1]", consul, got, err)
		}
		got, err = DetectAdvertiseAddrs(consul, false)
		if err != nil {
			if !strings.Contains(err.Error(), "--advertise-addr") {
				t.Errorf("%s: %v, an error that does not name --advertise-addr", consul, err)
			}
			continue
		}
		if len(got) == 0 {
			t.Errorf("%s: no address and no error", consul)
		}
		for _, a := range got {
			if err := record.Publishable(a, false); err != nil {
				t.Errorf("%s: detected %v: %v", consul, got, err)
			}
		}
	}
	for _, consul := range []string{"unix:///run/consul.sock", "/run/consul.sock"} {
		for _, allow := range []bool{false, true} {
			if got, err := DetectAdvertiseAddrs(consul, allow); err == nil || !strings.Contains(err.Error(), "--advertise-addr") {
				t.Errorf("%s: %v %v, want an error that asks for --advertise-addr", consul, got, err)
			}
		}
	}
}

// netns is a network namespace of the test's own, with loopback up and a
// veth pair b0/b1 (this kernel has no dummy links), both ends inside.
type netns struct {
	t    *testing.T
	name string
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		testenv.Unavailable(t, "ip (iproute2): %v", err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	n := &netns{t: t, name: "berth-adv-" + hex.EncodeToString(b)}
	n.ip("netns", "add", n.name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.name).Run() })
	n.ip("-n", n.name, "link", "set", "lo", "up")
	n.ip("-n", n.name, "link", "add", "b0", "type", "veth", "peer", "name", "b1")
	n.ip("-n", n.name, "link", "set", "b1", "up")
	n.ip("-n", n.name, "link", "set", "b0", "up")
	return n
}

func (n *netns) ip(args ...string) {
	n.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// in runs ip's arguments inside the namespace.
func (n *netns) in(args ...string) { n.t.Helper(); n.ip(append([]string{"-n", n.name}, args...)...) }

// detect runs DetectAdvertiseAddrs inside the namespace. Only route lookups
// happen: nothing is sent.
func (n *netns) detect(consul string, allowLoopback bool) ([]netip.Addr, error) {
	type result struct {
		addrs []netip.Addr
		err   error
	}
	done := make(chan result)
	go func() {
		// This thread enters the namespace and is never unlocked: it
		// ends with the goroutine instead of serving other goroutines.
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + n.name)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{err: err}
			return
		}
		addrs, err := DetectAdvertiseAddrs(consul, allowLoopback)
		done <- result{addrs, err}
	}()
	r := <-done
	return r.addrs, r.err
}

// TestDetectAdvertiseAddrsTwin proves the twin: with one interface holding
// 192.0.2.10/24 and 2001:db8::10/64, the route towards a Consul of either
// family gives that family's address first and the other one as its twin.
func TestDetectAdvertiseAddrsTwin(t *testing.T) {
	n := newNetns(t)
	n.in("addr", "add", "192.0.2.10/24", "dev", "b0")
	n.in("addr", "add", "2001:db8::10/64", "dev", "b0", "nodad")
	v4, v6 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")
	for consul, want := range map[string][]netip.Addr{
		"192.0.2.1:8500":     {v4, v6},
		"[2001:db8::1]:8500": {v6, v4},
	} {
		if got, err := n.detect(consul, false); err != nil || !slices.Equal(got, want) {
			t.Errorf("consul at %s: %v %v, want %v", consul, got, err, want)
		}
	}
}

// TestDetectAdvertiseLoopbackConsul proves a local Consul agent never makes
// loopback the advertise address without the opt-in: with a default route
// the detection takes that route's source address (and its twin); without
// one it refuses, naming --advertise-addr; with the opt-in it keeps
// loopback. A Consul reached over a link-local address is treated alike,
// opt-in or not.
func TestDetectAdvertiseLoopbackConsul(t *testing.T) {
	n := newNetns(t)
	for _, consul := range []string{"127.0.0.1:8500", "[::1]:8500"} {
		if got, err := n.detect(consul, false); err == nil || !strings.Contains(err.Error(), "--advertise-addr") ||
			!strings.Contains(err.Error(), "loopback") {
			t.Errorf("no default route, consul at %s: %v %v, want an error naming loopback and --advertise-addr", consul, got, err)
		}
		want := netip.MustParseAddr(strings.Trim(strings.TrimSuffix(consul, ":8500"), "[]"))
		if got, err := n.detect(consul, true); err != nil || !slices.Equal(got, []netip.Addr{want}) {
			t.Errorf("consul at %s, loopback allowed: %v %v, want [%s]", consul, got, err, want)
		}
	}

	n.in("addr", "add", "10.99.0.10/24", "dev", "b0")
	n.in("addr", "add", "fd99::10/64", "dev", "b0", "nodad")
	n.in("addr", "add", "169.254.7.7/16", "dev", "b1")
	n.in("route", "add", "default", "via", "10.99.0.1")
	v4, v6 := netip.MustParseAddr("10.99.0.10"), netip.MustParseAddr("fd99::10")
	for _, consul := range []string{"127.0.0.1:8500", "http://localhost:8500", "[::1]:8500", "169.254.7.1:8500"} {
		for _, allow := range []bool{false, true} {
			if allow && consul != "169.254.7.1:8500" {
				continue // kept as loopback, as above
			}
			if got, err := n.detect(consul, allow); err != nil || !slices.Equal(got, []netip.Addr{v4, v6}) {
				t.Errorf("default route via 10.99.0.1, consul at %s (loopback allowed: %v): %v %v, want %v",
					consul, allow, got, err, []netip.Addr{v4, v6})
			}
		}
	}
}
