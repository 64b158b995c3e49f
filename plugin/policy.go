package berth

import (
	"context"
	"time"

	"github.com/berthdns/berth/record"
	"github.com/hashicorp/consul/api"
	"golang.org/x/time/rate"
)

// policyUpdate is one state of the ownership policy document
// (<prefix>/policy): the policy to apply and the document's ModifyIndex
// (0 without a document), which counts in the zone's serial.
type policyUpdate struct {
	policy *record.Policy
	index  uint64
	err    error // why the document does not validate (policy is then record.ClosedPolicy)
}

// readPolicy reads the policy document at or after waitIndex (0: now),
// reporting a bad one through reports (each goroutine has its own). It
// returns Consul's index for the next blocking read and, when the document
// changed since last (nil: never read), the update to apply. The policy
// applied is a function of the document alone, so that every server of a
// zone applies the same whenever it started: none, the open policy (v1);
// a valid one, itself; one that does not validate (reported once),
// record.ClosedPolicy, which allows no claim and no address, so that a
// broken document never allows more than the one it replaced.
func (w *watcher) readPolicy(ctx context.Context, waitIndex uint64, last *policyUpdate, reports *reporter) (uint64, *policyUpdate, error) {
	ctx = withRequest(ctx, &consulRequest{kind: requestPolicy})
	q := (&api.QueryOptions{WaitIndex: waitIndex, WaitTime: watchWait, AllowStale: true}).WithContext(ctx)
	pair, meta, err := w.kv.Get(record.PolicyKey(w.prefix), q)
	if err != nil {
		return 0, nil, err
	}
	var u *policyUpdate
	switch {
	case pair == nil:
		u = &policyUpdate{policy: record.OpenPolicy}
	case last != nil && pair.ModifyIndex == last.index:
		return meta.LastIndex, nil, nil
	default:
		p, err := record.DecodePolicy(pair.Key, pair.Value)
		if err != nil {
			reports.invalid(policyReports, pair, err)
			p = record.ClosedPolicy
		}
		u = &policyUpdate{policy: p, index: pair.ModifyIndex, err: err}
	}
	if last != nil && last.index == u.index && last.policy == u.policy {
		return meta.LastIndex, nil, nil
	}
	return meta.LastIndex, u, nil
}

// watchPolicy follows the policy document with blocking reads (at most one
// a second: reads of a missing key return at every KV write) and hands
// each change to the main loop. Its errors are the main loop's to report:
// both talk to the same Consul.
func (w *watcher) watchPolicy(ctx context.Context, index uint64, last *policyUpdate) {
	limit := rate.NewLimiter(rate.Every(time.Second), 1)
	reports := newReporter()
	failures := 0
	for limit.Wait(ctx) == nil {
		next, u, err := w.readPolicy(ctx, index, last, reports)
		if err != nil {
			failures++
			index = 0
			sleep(ctx, watchBackoff.Delay(failures))
			continue
		}
		failures = 0
		index, _ = nextWaitIndex(index, next)
		if u != nil {
			last = u
			select { // the newest policy replaces one not yet applied
			case <-w.policyCh:
			default:
			}
			w.policyCh <- u
		}
	}
}

// setPolicy gives the zones an ownership policy; their hosts need
// compiling again (applyPolicy) for it to take effect.
func (w *watcher) setPolicy(u *policyUpdate) {
	switch {
	case u.err != nil:
		// Once per spell: another bad version is the reporter's to log.
		if !w.policy.policy.Closed() {
			log.Errorf("ownership policy %s (index %d) does not validate: no service name, alias or address is served "+
				"until a valid one is written (berth policy check FILE; README: Security): %v", record.PolicyKey(w.prefix), u.index, u.err)
		}
	case u.policy == record.OpenPolicy && w.policy.policy != record.OpenPolicy:
		log.Warningf("ownership policy %s is gone: any host may publish any service name (README: Security)", record.PolicyKey(w.prefix))
	case u.policy != record.OpenPolicy:
		log.Infof("ownership policy %s (index %d): %d rules, default %s, %d address rules", record.PolicyKey(w.prefix), u.index,
			len(u.policy.Rules), u.policy.Default, len(u.policy.Addresses))
	}
	w.policy = *u
	for _, z := range w.zones {
		z.policy = u.policy
	}
	setPolicyValid(w.zones, u.err == nil)
}

// applyPolicy installs a new ownership policy and compiles every host again
// under it.
func (w *watcher) applyPolicy(u *policyUpdate) {
	w.setPolicy(u)
	b := batch{}
	for name, st := range w.hosts {
		b[name] = st.data()
	}
	w.apply(b, w.index.dataIndex())
}
