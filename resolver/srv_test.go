package resolver

import (
	"math/rand/v2"
	"testing"

	"github.com/miekg/dns"
)

func srv(prio, weight uint16, target string) *dns.SRV {
	return &dns.SRV{Hdr: dns.RR_Header{Name: "_80._tcp.web.z.", Rrtype: dns.TypeSRV, Class: dns.ClassINET},
		Priority: prio, Weight: weight, Port: 80, Target: target}
}

// Lower priorities always come first, whatever the weights and the draw.
func TestOrderSRVPriorityFirst(t *testing.T) {
	rrs := []*dns.SRV{srv(20, 100, "c."), srv(10, 0, "a."), srv(30, 1, "d."), srv(10, 50, "b."), srv(20, 0, "e.")}
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		got := orderSRV(rrs, rnd.IntN)
		if len(got) != len(rrs) {
			t.Fatalf("got %d records, want %d", len(got), len(rrs))
		}
		for i := 1; i < len(got); i++ {
			if got[i].Priority < got[i-1].Priority {
				t.Fatalf("priority %d after %d: %v", got[i].Priority, got[i-1].Priority, got)
			}
		}
	}
}

// Within a priority the first pick follows the weights (RFC 2782): with
// weights 30, 10 and 0 the first record comes first 30/41 of the time, the
// second 10/41, and the weight-0 record only when the draw is 0 (1/41).
func TestOrderSRVWeightedWithinPriority(t *testing.T) {
	rrs := []*dns.SRV{srv(10, 30, "heavy."), srv(10, 10, "light."), srv(10, 0, "zero.")}
	rnd := rand.New(rand.NewPCG(3, 4))
	const n = 20000
	first := map[string]int{}
	for range n {
		first[orderSRV(rrs, rnd.IntN)[0].Target]++
	}
	for target, want := range map[string]float64{"heavy.": 30.0 / 41, "light.": 10.0 / 41, "zero.": 1.0 / 41} {
		got := float64(first[target]) / n
		if got < want-0.02 || got > want+0.02 {
			t.Errorf("%s first in %.3f of orderings, want %.3f ± 0.02 (counts %v)", target, got, want, first)
		}
	}
}

// Equal weights of zero are all still tried, in an order that varies.
func TestOrderSRVAllZeroWeights(t *testing.T) {
	rrs := []*dns.SRV{srv(10, 0, "a."), srv(10, 0, "b."), srv(10, 0, "c.")}
	rnd := rand.New(rand.NewPCG(5, 6))
	first := map[string]int{}
	for range 300 {
		got := orderSRV(rrs, rnd.IntN)
		seen := map[string]bool{}
		for _, rr := range got {
			seen[rr.Target] = true
		}
		if len(seen) != 3 {
			t.Fatalf("ordering lost records: %v", got)
		}
		first[got[0].Target]++
	}
	if len(first) != 3 {
		t.Errorf("with equal weights every record should sometimes come first; got %v", first)
	}
}
