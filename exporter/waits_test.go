package exporter

import (
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
)

// The waits of this package's tests, from the exporter's own bounds
// (testenv's derivations of them are checked below).

// changeWait is how long a change to a container may take to reach KV on
// r's engine: its event's (testenv.ExporterChangeWait), on Podman with
// the lag of Podman's events (testenv.ExporterPodmanChangeWait).
func (r *rig) changeWait() time.Duration {
	if r.engine == EnginePodman {
		return testenv.ExporterPodmanChangeWait
	}
	return testenv.ExporterChangeWait
}

// The health check of the rig's containers (runContainer's health option):
// a check every checkInterval, each cut off at checkTimeout; checkRetries
// failures in a row make the container unhealthy.
const (
	checkInterval = 500 * time.Millisecond
	checkTimeout  = 5 * time.Second
	checkRetries  = 3
)

// healthFlipWait is how long the engine may take to change a container's
// health status after its check's answer changed: checkRetries checks,
// each started checkInterval after the last ended and cut off at
// checkTimeout (Docker's HEALTHCHECK semantics; on Podman the rig runs
// the checks itself at the same pace). The health_status event and the
// publish then take r.changeWait().
const healthFlipWait = checkRetries * (checkInterval + checkTimeout)

// TestWaitsFollowTheBounds checks that testenv's waits, which every
// package's tests use for the exporter, are derived from the exporter's
// constants as they stand: a bound changed here without them would leave
// the tests waiting for the old one.
func TestWaitsFollowTheBounds(t *testing.T) {
	step := dockerTimeout + consulTimeout
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{
		{"ExporterChangeWait", testenv.ExporterChangeWait, 2 * step},
		{"ExporterStartWait", testenv.ExporterStartWait, 3*dockerTimeout + consulTimeout},
		{"ExporterStartWaitFor(3)", testenv.ExporterStartWaitFor(3), 5*dockerTimeout + consulTimeout},
		{"ExporterExitWait", testenv.ExporterExitWait, 2 * consulTimeout},
	} {
		if c.got != c.want {
			t.Errorf("testenv.%s is %v; the exporter's bounds make it %v", c.name, c.got, c.want)
		}
	}
}
