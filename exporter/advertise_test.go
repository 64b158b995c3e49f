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
)

// TestDetectAdvertiseAddrs proves the default advertise address is the
// source address towards Consul, for each form a Consul address takes,
// with no twin where the other family has no global address (loopback's
// ::1 is not one), and that a unix socket asks for the flag instead.
func TestDetectAdvertiseAddrs(t *testing.T) {
	t.Parallel()
	for _, consul := range []string{"127.0.0.1:8500", "127.0.0.1", "http://127.0.0.1:8500", "https://127.0.0.1"} {
		got, err := DetectAdvertiseAddrs(consul)
		if err != nil || !slices.Equal(got, []netip.Addr{loopback}) {
			t.Errorf("%s: %v %v, want [127.0.0.1]", consul, got, err)
		}
	}
	for _, consul := range []string{"unix:///run/consul.sock", "/run/consul.sock"} {
		if got, err := DetectAdvertiseAddrs(consul); err == nil || !strings.Contains(err.Error(), "--advertise-addr") {
			t.Errorf("%s: %v %v, want an error that asks for --advertise-addr", consul, got, err)
		}
	}
}

// TestDetectAdvertiseAddrsTwin proves the twin: in a network namespace of
// its own with one interface holding 192.0.2.10/24 and 2001:db8::10/64
// (and its veth peer, holding nothing), the
// route towards a Consul of either family gives that family's address first
// and the other one as its twin. Only route lookups happen: nothing is sent.
func TestDetectAdvertiseAddrsTwin(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		testenv.Unavailable(t, "ip (iproute2): %v", err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := "berth-twin-" + hex.EncodeToString(b)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	// A veth pair, both ends inside (this kernel has no dummy links).
	ip("-n", ns, "link", "add", "b0", "type", "veth", "peer", "name", "b1")
	ip("-n", ns, "link", "set", "b1", "up")
	ip("-n", ns, "link", "set", "b0", "up")
	ip("-n", ns, "addr", "add", "192.0.2.10/24", "dev", "b0")
	ip("-n", ns, "addr", "add", "2001:db8::10/64", "dev", "b0", "nodad")

	type result struct {
		addrs []netip.Addr
		err   error
	}
	detect := func(consul string) result {
		done := make(chan result)
		go func() {
			// This thread enters the namespace and is never unlocked: it
			// ends with the goroutine instead of serving other goroutines.
			runtime.LockOSThread()
			f, err := os.Open("/run/netns/" + ns)
			if err != nil {
				done <- result{err: err}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				done <- result{err: err}
				return
			}
			addrs, err := DetectAdvertiseAddrs(consul)
			done <- result{addrs, err}
		}()
		return <-done
	}
	v4, v6 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")
	for consul, want := range map[string][]netip.Addr{
		"192.0.2.1:8500":     {v4, v6},
		"[2001:db8::1]:8500": {v6, v4},
	} {
		if r := detect(consul); r.err != nil || !slices.Equal(r.addrs, want) {
			t.Errorf("consul at %s: %v %v, want %v", consul, r.addrs, r.err, want)
		}
	}
}
