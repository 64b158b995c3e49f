package resolver

import (
	"cmp"
	"slices"

	"github.com/miekg/dns"
)

// orderSRV returns the records in the order RFC 2782 says to try them: by
// priority, lowest first; within one priority, a weighted random order in
// which a record's chance to come next is its share of the remaining weight.
// intn(n) must return a uniform integer in [0, n).
func orderSRV(rrs []*dns.SRV, intn func(int) int) []*dns.SRV {
	sorted := slices.Clone(rrs)
	slices.SortStableFunc(sorted, func(a, b *dns.SRV) int { return cmp.Compare(a.Priority, b.Priority) })
	out := make([]*dns.SRV, 0, len(sorted))
	for len(sorted) > 0 {
		n := 1
		for n < len(sorted) && sorted[n].Priority == sorted[0].Priority {
			n++
		}
		out = append(out, weightedOrder(sorted[:n], intn)...)
		sorted = sorted[n:]
	}
	return out
}

// weightedOrder orders one priority's records by RFC 2782's selection:
// records of weight 0 are placed first (in random order), then repeatedly a
// number is chosen uniformly in [0, sum of remaining weights] and the first
// record whose running sum reaches it is taken. Weight-0 records thus have
// a small chance to be picked while heavier ones remain, as the RFC intends.
func weightedOrder(group []*dns.SRV, intn func(int) int) []*dns.SRV {
	rest := slices.Clone(group)
	for i := len(rest) - 1; i > 0; i-- { // Fisher-Yates: "any order" for equal weights
		j := intn(i + 1)
		rest[i], rest[j] = rest[j], rest[i]
	}
	slices.SortStableFunc(rest, func(a, b *dns.SRV) int {
		return cmp.Compare(min(a.Weight, 1), min(b.Weight, 1)) // zero weights first
	})
	out := make([]*dns.SRV, 0, len(rest))
	for len(rest) > 0 {
		sum := 0
		for _, rr := range rest {
			sum += int(rr.Weight)
		}
		pick := intn(sum + 1)
		running, i := 0, 0
		for i = range rest {
			running += int(rest[i].Weight)
			if running >= pick {
				break
			}
		}
		out = append(out, rest[i])
		rest = slices.Delete(rest, i, i+1)
	}
	return out
}
