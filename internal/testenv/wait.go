package testenv

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Eventually polls cond every 20 ms until it returns nil, and fails t with
// cond's last error if that has not happened within the given time. The
// bound is a deadline for a condition that must come true, not a timing
// being measured.
func Eventually(t T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(PollInterval)
	}
}

// Exchange sends one DNS query over network ("udp" or "tcp") to addr, with
// EDNS0 when udpSize > 0.
func Exchange(network, addr, name string, qtype, udpSize uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if udpSize > 0 {
		m.SetEdns0(udpSize, false)
	}
	c := &dns.Client{Net: network, Timeout: QueryTimeout}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// MetricValue is the value of an in-process counter or gauge, or the
// sample count of a histogram. (It does what prometheus/testutil.ToFloat64
// does; that package needs a module, kylelemons/godebug, that go.mod does
// not list.)
func MetricValue(m prometheus.Metric) float64 {
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		panic(err)
	}
	switch {
	case out.Counter != nil:
		return out.Counter.GetValue()
	case out.Gauge != nil:
		return out.Gauge.GetValue()
	case out.Histogram != nil:
		return float64(out.Histogram.GetSampleCount())
	}
	panic("not a counter, gauge or histogram")
}

// EventuallyTrue is Eventually for a condition that has no error to tell.
func EventuallyTrue(t T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	Eventually(t, within, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

var errNotYet = errors.New("not yet")

// PutJSON writes doc, as JSON, at key: how tests seed Consul KV with
// documents as a producer would.
func PutJSON(t T, kv *api.KV, key string, doc any) {
	t.Helper()
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(&api.KVPair{Key: key, Value: b}, nil); err != nil {
		t.Fatalf("consul put %s: %v", key, err)
	}
}
