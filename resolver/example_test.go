package resolver_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/resolver"
)

// Dial a service by the container port it listens on; the resolver finds
// the host and the port Docker published through SRV records.
func ExampleResolver_Dial() {
	dnsAddr, stop := exampleZone()
	defer stop()

	r, err := resolver.New(resolver.Options{Server: dnsAddr, Zones: []string{"c.example.org"}})
	if err != nil {
		log.Fatal(err)
	}
	conn, err := r.Dial(context.Background(), "tcp", "web.shop.c.example.org:80")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET / HTTP/1.0\r\nHost: web.shop.c.example.org\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(string(body))
	// Output: hello from web-1
}

// Any HTTP client can use the resolver as its dialer: URLs then name the
// service and its container port, never the published one.
func ExampleResolver_Dial_httpClient() {
	dnsAddr, stop := exampleZone()
	defer stop()

	r, err := resolver.New(resolver.Options{Server: dnsAddr, Zones: []string{"c.example.org"}})
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: r.Dial}}
	resp, err := client.Get("http://web.shop.c.example.org/")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(resp.Status, ": ", string(body))
	// Output: 200 OK: hello from web-1
}

// Resolve shows where Dial would go, in the order it would try.
func ExampleResolver_Resolve() {
	dns, err := testenv.NewDNSServer(
		"_80._tcp.api.shop.c.example.org. 30 IN SRV 20 10 32801 host2.hosts.c.example.org.",
		"_80._tcp.api.shop.c.example.org. 30 IN SRV 10 10 32769 host1.hosts.c.example.org.",
	)
	if err != nil {
		log.Fatal(err)
	}
	defer dns.Close()

	r, err := resolver.New(resolver.Options{Server: dns.Addr})
	if err != nil {
		log.Fatal(err)
	}
	plan, err := r.Resolve(context.Background(), "tcp", "api.shop.c.example.org:80")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("SRV", plan.SRV)
	for _, t := range plan.Targets {
		fmt.Println("priority", t.Priority, t)
	}
	// Output:
	// SRV _80._tcp.api.shop.c.example.org.
	// priority 10 host1.hosts.c.example.org.:32769
	// priority 20 host2.hosts.c.example.org.:32801
}

// A failed Dial says which names it tried and why each failed.
func ExampleDialError() {
	dns, err := testenv.NewDNSServer(
		"c.example.org. 60 IN SOA ns.c.example.org. hostmaster.c.example.org. 1 60 60 60 5",
		"_80._tcp.web.shop.c.example.org. 30 IN SRV 10 10 32768 gone.hosts.c.example.org.",
	)
	if err != nil {
		log.Fatal(err)
	}
	defer dns.Close()

	r, err := resolver.New(resolver.Options{Server: dns.Addr})
	if err != nil {
		log.Fatal(err)
	}
	_, err = r.Dial(context.Background(), "tcp", "web.shop.c.example.org:80")
	fmt.Println(err)
	fmt.Println("no such host:", errors.Is(err, resolver.ErrNoSuchHost))
	// Output:
	// resolver: dial tcp web.shop.c.example.org:80: _80._tcp.web.shop.c.example.org. SRV: 1 target: gone.hosts.c.example.org.:32768: no such host
	// no such host: true
}

// exampleZone stands in for CoreDNS with the berth plugin and a container:
// an HTTP server on a random loopback port, published under
// _80._tcp.web.shop.c.example.org.
func exampleZone() (dnsAddr string, stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "hello from web-1")
	})}
	go srv.Serve(ln)
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	dns, err := testenv.NewDNSServer(
		"_80._tcp.web.shop.c.example.org. 5 IN SRV 10 10 "+port+" host1.hosts.c.example.org.",
		"host1.hosts.c.example.org. 5 IN A 127.0.0.1",
	)
	if err != nil {
		log.Fatal(err)
	}
	return dns.Addr, func() { dns.Close(); srv.Close() }
}
