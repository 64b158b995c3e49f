package berth

import (
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
)

// The waits of this package's tests, from the plugin's own bounds: every
// request to Consul is cut off at consulRequestTimeout (consul.go), a
// failed read is retried after at most watchBackoff.Max (watch.go), and
// NOTIFY rounds are at least notifyGap apart (notify.go). testenv's
// ZoneChangeWait, ZoneRecoverWait and ZoneStartWait, which other packages
// use, are checked against them below.

// stopWait is how long a watcher may take to end once its context ends:
// the request in flight is cancelled with it, and is cut off at
// consulRequestTimeout in any case.
const stopWait = consulRequestTimeout

// failWait is how long a watcher may take to notice that Consul is gone
// (its stale gauge): the request in flight fails at once when the agent's
// connections close, and at consulRequestTimeout when it hangs.
const failWait = consulRequestTimeout

// SecondaryChangeWait is how long a change in Consul may take to reach a
// secondary (BIND) of a berth server: berth serves it within
// testenv.ZoneChangeWait, sends NOTIFY within notifyGap, and the secondary
// asks for the SOA and then the IXFR, two DNS rounds on loopback answered
// from memory, each bounded as the tests' own queries are
// (testenv.QueryTimeout). A refresh that failed would be retried only
// after the SOA's retry timer (60 s): that is a failure the tests must
// see, not wait out.
// (Exported to this package's external tests, which the end-to-end ones
// are.)
const SecondaryChangeWait = testenv.ZoneChangeWait + NotifyGap + 2*testenv.QueryTimeout

// NotifyGap is notifyGap, for this package's external tests.
const NotifyGap = notifyGap

// TestWaitsFollowTheBounds checks testenv's waits for the plugin against
// the plugin's constants as they stand.
func TestWaitsFollowTheBounds(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{
		{"ZoneChangeWait", testenv.ZoneChangeWait, 2 * consulRequestTimeout},
		{"ZoneRecoverWait", testenv.ZoneRecoverWait, watchBackoff.Max + 2*consulRequestTimeout},
		{"ZoneStartWait", testenv.ZoneStartWait, 2 * consulRequestTimeout},
	} {
		if c.got != c.want {
			t.Errorf("testenv.%s is %v; the plugin's bounds make it %v", c.name, c.got, c.want)
		}
	}
}
