package proxy

import (
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/berthdns/berth/internal/testenv"
)

// When the DNS server cannot be reached (its port refuses, or it never
// answers), a SOCKS client gets 0x04 host unreachable and an HTTP client 502
// naming the server, as proxy/README.md says, and the failure is counted as
// dns: the ICMP refusal from the DNS server's port is not the target's.
func TestUnreachableDNSServer(t *testing.T) {
	closed, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.LocalAddr().String()
	closed.Close()
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })

	for name, server := range map[string]string{"refusing port": closedAddr, "silent server": silent.LocalAddr().String()} {
		t.Run(name, func(t *testing.T) {
			srv, socksAddr, httpAddr := startInProcess(t, Config{Zones: []string{"c.test"}, DNSServer: server})
			c, reply := socksConnect(t, socksAddr, "web.c.test", 80)
			if reply != replyHostUnreachable {
				t.Errorf("SOCKS: reply %#x, want %#x (host unreachable)", reply, replyHostUnreachable)
			}
			expectClosed(t, c)
			status, body := get(t, proxyClient(t, httpAddr, nil), "GET", "http://web.c.test/", "")
			if status != http.StatusBadGateway || !strings.Contains(body, "_80._tcp.web.c.test. SRV: "+server) {
				t.Errorf("HTTP: %d %q, want 502 naming the SRV query and %s", status, body, server)
			}
			m := srv.Metrics()
			if n := testenv.MetricValue(m.DialFailures.WithLabelValues("socks", failDNS)); n != 1 {
				t.Errorf("dial_failures{socks,dns} = %v, want 1", n)
			}
			if n := testenv.MetricValue(m.DialFailures.WithLabelValues("socks", failRefused)); n != 0 {
				t.Errorf("dial_failures{socks,refused} = %v: the DNS server's refusal was taken for the target's", n)
			}
		})
	}
}
