// Command testsvc is the tiny service that Berth's tests run in containers
// built FROM scratch: an HTTP server that names itself, with a health
// endpoint the test can flip, and a -check mode for Docker's HEALTHCHECK.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"sync/atomic"
)

func main() {
	listen := flag.String("listen", ":80", "address to serve on")
	check := flag.String("check", "", "probe this URL and exit 0 if it answers 200 (for HEALTHCHECK)")
	flag.Parse()

	if *check != "" {
		resp, err := http.Get(*check)
		if err != nil || resp.StatusCode != http.StatusOK {
			os.Exit(1)
		}
		os.Exit(0)
	}

	name, _ := os.Hostname()
	if n := os.Getenv("TESTSVC_NAME"); n != "" {
		name = n
	}
	var unhealthy atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", name)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if unhealthy.Load() {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	// POST /fail and /recover flip the health endpoint.
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, r *http.Request) { unhealthy.Store(true) })
	mux.HandleFunc("POST /recover", func(w http.ResponseWriter, r *http.Request) { unhealthy.Store(false) })
	log.Fatal(http.ListenAndServe(*listen, mux))
}
