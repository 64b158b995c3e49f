package berth

import (
	"github.com/miekg/dns"
)

// zoneDelta is the difference between two consecutive serials of a zone:
// the records that went and the records that came, as IXFR (RFC 1995)
// sends them.
type zoneDelta struct {
	from, to uint32
	del, add []dns.RR
}

// addName puts the difference between a name's old and new node into d. Both
// may be nil (no such name) or an empty non-terminal. A node joined on
// first use is compared part by part: parts are per host and shared with
// the node they replace, so a change of one host costs that host's records
// and no join.
func (d *zoneDelta) addName(was, is *node) {
	if was.size() == 0 && is.size() == 0 {
		return
	}
	var oldRRs, newRRs []dns.RR
	if was != nil && is != nil && was.lazy != nil && is.lazy != nil {
		kept := make(map[*node]bool, len(is.lazy.parts))
		for _, p := range is.lazy.parts {
			kept[p.n] = true
		}
		for _, p := range was.lazy.parts {
			if kept[p.n] {
				delete(kept, p.n) // in both: no difference
			} else {
				oldRRs = append(oldRRs, p.n.all()...)
			}
		}
		for _, p := range is.lazy.parts {
			if kept[p.n] {
				newRRs = append(newRRs, p.n.all()...)
			}
		}
	} else {
		if was.size() > 0 {
			oldRRs = was.all()
		}
		if is.size() > 0 {
			newRRs = is.all()
		}
	}
	// Records are compared in presentation form: this runs once per change
	// of a name, never per query.
	count := make(map[string]int, len(oldRRs))
	for _, rr := range oldRRs {
		count[rr.String()]++
	}
	for _, rr := range newRRs {
		k := rr.String()
		if count[k] > 0 {
			count[k]--
			continue
		}
		d.add = append(d.add, dns.Copy(rr))
	}
	for _, rr := range oldRRs {
		k := rr.String()
		if count[k] > 0 {
			count[k]--
			d.del = append(d.del, dns.Copy(rr))
		}
	}
}

func (d *zoneDelta) size() int { return len(d.del) + len(d.add) }

// Bounds of the journal: enough for a secondary to catch up over IXFR after
// a burst of changes or a short outage, small beside the zone itself. An
// older secondary gets an AXFR. Besides, the journal never holds more
// records than half the zone: Transfer answers an IXFR of more with an
// AXFR, so older differences would only keep deleted records alive.
const (
	journalMaxDeltas  = 1024
	journalMaxRecords = 100_000
)

// journal holds the differences behind the zone's most recent serials,
// oldest first, each one's to the next one's from. The zone's write lock
// guards it.
type journal struct {
	deltas  []zoneDelta
	records int
}

// add appends d, the change from the current serial to the next, and drops
// the oldest differences beyond the bounds, for a zone of zoneRecords.
func (j *journal) add(d zoneDelta, zoneRecords int) {
	maxRecords := min(journalMaxRecords, zoneRecords/2)
	if n := len(j.deltas); n > 0 && j.deltas[n-1].to != d.from {
		// A gap (it cannot happen while one goroutine installs) would
		// make the journal lie: start it over.
		j.deltas, j.records = nil, 0
	}
	j.deltas = append(j.deltas, d)
	j.records += d.size()
	drop := 0
	for len(j.deltas)-drop > 1 && (len(j.deltas)-drop > journalMaxDeltas || j.records > maxRecords) {
		j.records -= j.deltas[drop].size()
		drop++
	}
	if drop > 0 {
		// Copy rather than reslice, so the dropped differences are freed.
		j.deltas = append([]zoneDelta(nil), j.deltas[drop:]...)
	}
}

// since returns the differences from serial to the current serial, or false
// when serial is not one the journal still holds.
func (j *journal) since(serial uint32) ([]zoneDelta, bool) {
	for i, d := range j.deltas {
		if d.from == serial {
			return j.deltas[i:], true
		}
	}
	return nil, false
}
