package testenv

import (
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
)

// CountingListener counts the connections it accepts: a target that tells
// whether a proxy (or anything else) dialled it.
type CountingListener struct {
	net.Listener
	N *atomic.Int32
}

// Accept accepts as its listener does and counts the connection.
func (l CountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.N.Add(1)
	}
	return c, err
}

// ServeCounting serves HTTP on ln until the test ends, answering body to
// every request, and returns the count of connections it accepted.
func ServeCounting(t T, ln net.Listener, body string) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, body) })}
	go hs.Serve(CountingListener{ln, &n})
	t.Cleanup(func() { hs.Close() })
	return &n
}
