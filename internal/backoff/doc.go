// Package backoff is the one retry backoff of the module: exponential from a
// minimum to a cap, of which a random half is jitter, so that many clients
// do not return to a recovering peer in step. The exporter (its worker and
// its Docker event stream) and the CoreDNS plugin's Consul watch use it.
//
// Files: backoff.go holds Policy and Backoff; backoff_test.go their tests.
package backoff
