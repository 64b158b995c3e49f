package berth

import (
	"context"
	"time"

	"github.com/coredns/coredns/plugin/transfer"
)

// notifyGap is the least time between two NOTIFY rounds of one server
// block: a burst of changes costs the secondaries a few NOTIFYs a second
// (each answered by an IXFR of what changed meanwhile), not one per change.
const notifyGap = 250 * time.Millisecond

// notifier sends NOTIFY (RFC 1996) for the block's zones to the transfer
// plugin's `to` hosts after a change, coalescing bursts: a change while a
// round is being sent, or within notifyGap of one, makes one more round
// after it, so the last change is always notified.
type notifier struct {
	xfer  *transfer.Transfer // nil without the transfer plugin: nothing to do
	zones []*Zone
	kick  chan struct{}
	// failing holds the zones whose last round failed, so that a secondary
	// that is down is logged when it goes and when it is back, not per round.
	failing map[string]bool
}

func newNotifier(zones []*Zone) *notifier {
	return &notifier{zones: zones, kick: make(chan struct{}, 1), failing: map[string]bool{}}
}

// changed asks for a NOTIFY round; it never blocks.
func (n *notifier) changed() {
	select {
	case n.kick <- struct{}{}:
	default: // a round is already due
	}
}

// run sends the rounds until ctx ends.
func (n *notifier) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.kick:
		}
		n.round()
		sleep(ctx, notifyGap)
	}
}

// round notifies every loaded zone; a zone is loaded once its first full
// load is in, and the watcher's loaded callback asks for its first round.
func (n *notifier) round() {
	for _, z := range n.zones {
		if !z.Loaded() {
			continue
		}
		err := n.xfer.Notify(z.Origin())
		switch {
		case err != nil:
			notifies.WithLabelValues(z.Origin(), "failed").Inc()
			if !n.failing[z.Origin()] {
				log.Warningf("notify %s (serial %d): %v", z.Origin(), z.SOA().Serial, err)
				n.failing[z.Origin()] = true
			}
		default:
			notifies.WithLabelValues(z.Origin(), "ok").Inc()
			if n.failing[z.Origin()] {
				log.Infof("notify %s: every secondary accepts again", z.Origin())
				delete(n.failing, z.Origin())
			}
		}
	}
}
