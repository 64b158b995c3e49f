package berth

import (
	"slices"
	"testing"

	"github.com/berthdns/berth/record"
	"github.com/miekg/dns"
)

// withCreated gives d's containers the CreateIndex created, as the watcher
// does from their keys.
func withCreated(d *hostDocs, created uint64) *hostDocs {
	d.Created = make([]uint64, len(d.Containers))
	for i := range d.Created {
		d.Created[i] = created
	}
	return d
}

// TestZoneOldestClaimHolds proves a name several services claim is held by
// the oldest claim (its documents' CreateIndex), whatever the services'
// names and whether the newcomer claims it as an alias or as its own name;
// that the names below it (_<P>._<proto>.<name>) follow the holder, even
// one only the newcomer's ports make; and that they all pass to the next
// oldest claim when the holder leaves.
func TestZoneOldestClaimHolds(t *testing.T) {
	t.Parallel()
	var log skipLog
	z := newTestZone(log.fn)
	web := shopHost("h1", "192.0.2.10", "a1", "web-1", "web", 1001)
	web.Containers[0].Aliases = []string{"portal"}
	z.put("h1", withCreated(web, 10))
	// Newcomers that sort first: an alias with another port (8080, which
	// makes _8080._tcp.portal, a name the holder does not have), and a
	// service named portal.
	aaa := mkData(mkHost("h2", "192.0.2.20"), mkCtr("b2", "aaa-1", "aaa", record.HealthHealthy, mkPort(8080, "tcp", "http", "192.0.2.20", 2002)))
	aaa.Containers[0].Aliases = []string{"portal"}
	z.put("h2", withCreated(aaa, 20))
	z.put("h3", withCreated(shopHost("h3", "192.0.2.30", "c3", "portal-1", "portal", 3003), 30))
	z.MarkLoaded()
	want := func(when string, names map[string][]string) {
		t.Helper()
		for name, rrs := range names {
			if got := answerStrings(z, name+testOrigin, dns.TypeSRV); !slices.Equal(got, rrStrings(rrs...)) {
				t.Errorf("%s: %s SRV %v, want %v", when, name, got, rrs)
			}
		}
	}
	want("the holder first", map[string][]string{
		"portal.":            {"portal.c.example.org. 30 IN SRV 10 10 1001 h1.hosts.c.example.org."},
		"_80._tcp.portal.":   {"_80._tcp.portal.c.example.org. 30 IN SRV 10 10 1001 h1.hosts.c.example.org."},
		"_http._tcp.portal.": {"_http._tcp.portal.c.example.org. 30 IN SRV 10 10 1001 h1.hosts.c.example.org."},
		"_8080._tcp.portal.": nil,
		"aaa.":               {"aaa.c.example.org. 30 IN SRV 10 10 2002 h2.hosts.c.example.org."},
		"portal-1.h3.hosts.": {"portal-1.h3.hosts.c.example.org. 30 IN SRV 10 10 3003 h3.hosts.c.example.org."},
	})
	if !log.has("conflict", "portal."+testOrigin) || !log.has("conflict", "_8080._tcp.portal."+testOrigin) {
		t.Errorf("the newcomers' claims are not reported: %v", log.all())
	}
	// The holder leaves: the next oldest, aaa's alias, takes every name
	// of it, those no batch touched included.
	z.put("h1", nil)
	want("the holder gone", map[string][]string{
		"portal.":            {"portal.c.example.org. 30 IN SRV 10 10 2002 h2.hosts.c.example.org."},
		"_8080._tcp.portal.": {"_8080._tcp.portal.c.example.org. 30 IN SRV 10 10 2002 h2.hosts.c.example.org."},
		"_80._tcp.portal.":   nil,
	})
	// The holder comes back with a new document (a new CreateIndex): it
	// is now the newcomer.
	z.put("h1", withCreated(web, 40))
	want("the old holder back, newer", map[string][]string{
		"portal.": {"portal.c.example.org. 30 IN SRV 10 10 2002 h2.hosts.c.example.org."},
	})
}

// TestCheckConflictNamesTheClaim proves Check's conflict findings name the
// claim merge left out (its service, and whether an alias), so that a tool
// does not take a served service's name for one left out.
func TestCheckConflictNamesTheClaim(t *testing.T) {
	t.Parallel()
	web := mkCtr("a1", "web-1", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1001))
	web.Aliases = []string{"portal"}
	portal := mkCtr("b1", "portal-1", "portal", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1002))
	got := Check(CheckZone{Origin: testOrigin}, []CheckHost{{Host: mkHost("h1", "192.0.2.10"),
		Containers: []*record.Container{web, portal}, Created: map[string]uint64{portal.ID: 5, web.ID: 9}}})
	for _, f := range got {
		if f.Name == "portal."+testOrigin && (f.Service != "web" || !f.Alias || f.Reason != "conflict") {
			t.Errorf("finding %+v, want web's alias in conflict", f)
		}
	}
	if !slices.ContainsFunc(got, func(f Finding) bool { return f.Name == "portal."+testOrigin }) {
		t.Errorf("Check = %+v, want web's alias portal reported", got)
	}
}
