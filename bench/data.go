// Package bench is Berth's benchmark suite, run by `make bench` through the
// driver in bench/cmd/berthbench: query throughput and latency of the berth
// plugin against CoreDNS's file plugin and Consul's DNS interface, the
// propagation latency of real Docker containers through the exporter, the
// plugin's behaviour at 100,000 instances, what one host's change costs as
// the fleet grows to 10,000 hosts (bench/fleet.go), the exporter's
// reconcile, a BIND secondary following berth by NOTIFY and IXFR, and, run
// on its own by `make bench-large`, a million instances (bench/large.go).
// Nothing here is a test: no figure fails the
// run, every figure is reported next to a baseline measured in the same
// run.
package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"

	"github.com/berthdns/berth/exporter"
	"github.com/berthdns/berth/record"
)

// Zone is the zone every berth and file server of the suite serves.
const Zone = "c.example.org."

// Dataset is a synthetic Berth namespace: Hosts Docker hosts with PerHost
// containers each; container (h, c) is instance g = c*Hosts + h, of service
// g / Replicas, so the Replicas instances of a service run on Replicas
// neighbouring hosts. Every container publishes 80/tcp (named http); every
// fifth service also 9090/tcp, unnamed.
type Dataset struct {
	Name     string
	Prefix   string // Consul KV prefix
	Hosts    int
	PerHost  int
	Replicas int
	// PortNames > 1 names service s's 80/tcp http-<s mod PortNames>
	// instead of http: the DNS-SD list _<name>._tcp.<zone> holds one PTR per
	// instance of the name, and part 4 keeps each list within what a BIND
	// secondary holds (see bench/secondary.go).
	PortNames int
}

// PortName is the name of service s's 80/tcp.
func (d Dataset) PortName(s int) string {
	if d.PortNames > 1 {
		return fmt.Sprintf("http-%d", s%d.PortNames)
	}
	return "http"
}

// Instances is the number of containers.
func (d Dataset) Instances() int { return d.Hosts * d.PerHost }

// Services is the number of services.
func (d Dataset) Services() int { return (d.Instances() + d.Replicas - 1) / d.Replicas }

// HostName is host h's name (one DNS label).
func (d Dataset) HostName(h int) string { return fmt.Sprintf("h%04d", h) }

// benchAdvertiseAddr is the advertise address of the real exporters of
// parts 2 and 3, in the same range as HostAddr's.
const benchAdvertiseAddr = "198.18.255.1"

// HostAddr is host h's advertise address, in 198.18.0.0/15, the range set
// aside for benchmarks (RFC 2544). The addresses are only data: the suite
// never sends anything to them. They are not loopback addresses, which the
// exporter's Publisher and the plugin refuse to publish by default
// (record.Publishable).
func (d Dataset) HostAddr(h int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte(h / 250), byte(h%250 + 1)})
}

// ServiceName is service s's name.
func ServiceName(s int) string { return fmt.Sprintf("svc-%05d", s) }

func (d Dataset) instance(h, c int) (g, service, replica int) {
	g = c*d.Hosts + h
	return g, g / d.Replicas, g % d.Replicas
}

// ContainerName is the name of container c on host h.
func (d Dataset) ContainerName(h, c int) string {
	_, s, r := d.instance(h, c)
	return fmt.Sprintf("%s-%d", ServiceName(s), r)
}

// Container is the document of container c on host h.
func (d Dataset) Container(h, c int) *record.Container {
	g, s, _ := d.instance(h, c)
	sum := sha256.Sum256(fmt.Appendf(nil, "berth-bench-%d", g))
	addr := d.HostAddr(h)
	ctr := &record.Container{
		V: record.Version, ID: hex.EncodeToString(sum[:]),
		Name: d.ContainerName(h, c), Service: ServiceName(s),
		Image: "registry.example.org/team/" + ServiceName(s) + ":1.2.3", Health: record.HealthHealthy,
		Priority: record.DefaultPriority, Weight: record.DefaultWeight,
		Ports: []record.Port{{Port: 80, Proto: "tcp", Name: d.PortName(s), Addr: addr, HostPort: 20000 + c}},
	}
	if s%5 == 0 {
		ctr.Ports = append(ctr.Ports, record.Port{Port: 9090, Proto: "tcp", Addr: addr, HostPort: 40000 + c})
	}
	return ctr
}

// HostDocs is host h's desired state, as a Publisher takes it.
func (d Dataset) HostDocs(h int) map[string]*record.Container {
	docs := make(map[string]*record.Container, d.PerHost)
	for c := range d.PerHost {
		ctr := d.Container(h, c)
		docs[ctr.ID] = ctr
	}
	return docs
}

// Producer writes a Dataset into Consul KV as the hosts' exporters would:
// through the exporter's own Publisher (one per host, each with a session
// of its own), so that the keys, the documents, the transactions and the rev
// bumps are exactly the exporter's, in the KV layout of Mode
// (record/layout.go).
type Producer struct {
	D      Dataset
	Mode   record.WriteMode
	client *api.Client

	mu       sync.Mutex
	pubs     []*exporter.Publisher
	sessions []string
	docs     []map[string]*record.Container
	Stats    exporter.PublishStats
}

// NewProducer prepares a Producer for d whose Publishers write the host
// index in mode's layouts (record.WriteV2 for layout 2 alone, WriteV1 for
// the layout before it, WriteBoth as an exporter migrating does).
func NewProducer(client *api.Client, d Dataset, mode record.WriteMode) (*Producer, error) {
	// The Publisher ignores a mode that is not valid; a figure must not
	// silently measure the default instead.
	if _, err := record.ParseWriteMode(string(mode)); err != nil {
		return nil, err
	}
	p := &Producer{D: d, Mode: mode, client: client, pubs: make([]*exporter.Publisher, d.Hosts),
		sessions: make([]string, d.Hosts), docs: make([]map[string]*record.Container, d.Hosts)}
	for h := range d.Hosts {
		pub, err := exporter.NewPublisher(client, d.Prefix, d.HostName(h), exporter.WithExporterName("berthbench"), exporter.WithKVLayout(mode))
		if err != nil {
			return nil, err
		}
		p.pubs[h] = pub
		p.docs[h] = d.HostDocs(h)
	}
	return p, nil
}

// PublishAll creates the sessions and publishes every host, parallel at a
// time.
func (p *Producer) PublishAll(ctx context.Context, parallel int) error {
	return forEach(p.D.Hosts, parallel, func(h int) error {
		// One session per host, as each host's exporter has; created here
		// directly rather than with exporter.Session, whose adoption logic
		// lists every session of the cluster (fine for one exporter, slow
		// for a thousand created in a row).
		id, _, err := p.client.Session().CreateNoChecks(&api.SessionEntry{
			Name: exporter.SessionName(p.D.HostName(h)), Behavior: api.SessionBehaviorDelete,
			TTL: "3600s", LockDelay: time.Millisecond,
		}, (&api.WriteOptions{}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("session for %s: %w", p.D.HostName(h), err)
		}
		p.sessions[h] = id
		return p.publish(ctx, h)
	})
}

func (p *Producer) publish(ctx context.Context, h int) error {
	st, err := p.pubs[h].Publish(ctx, p.sessions[h], []netip.Addr{p.D.HostAddr(h)}, p.docs[h])
	p.mu.Lock()
	p.Stats.Sets += st.Sets
	p.Stats.Deletes += st.Deletes
	p.Stats.Txns += st.Txns
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("publish %s: %w", p.D.HostName(h), err)
	}
	return nil
}

// SetHostPort changes the host port of container c on host h (its first
// port) and publishes the host; it returns when Consul has committed the
// change. Only one goroutine may change a given host.
func (p *Producer) SetHostPort(ctx context.Context, h, c, hostPort int) error {
	id := p.D.Container(h, c).ID
	doc := *p.docs[h][id]
	doc.Ports = append([]record.Port(nil), doc.Ports...)
	doc.Ports[0].HostPort = hostPort
	p.docs[h][id] = &doc
	return p.publish(ctx, h)
}

// RegisterCatalog registers the dataset in Consul's catalog for Consul's DNS
// interface: one node per host at the host's address, one service instance
// per container (service name = the Berth service, port = the host port of
// 80/tcp).
func (d Dataset) RegisterCatalog(ctx context.Context, client *api.Client, parallel int) error {
	cat := client.Catalog()
	return forEach(d.Instances(), parallel, func(i int) error {
		h, c := i%d.Hosts, i/d.Hosts
		ctr := d.Container(h, c)
		_, err := cat.Register(&api.CatalogRegistration{
			Node: d.HostName(h), Address: d.HostAddr(h).String(), SkipNodeUpdate: c > 0,
			Service: &api.AgentService{ID: ctr.Name, Service: ctr.Service, Port: ctr.Ports[0].HostPort},
		}, (&api.WriteOptions{}).WithContext(ctx))
		return err
	})
}

// Query is one line of a dnsperf data file.
type Query struct {
	Name string
	Type uint16
}

// Queries is the suite's query mix over d, n queries in random order (seeded,
// so every run asks the same): a quarter each of SRV _80._tcp.<service>,
// A <service>, TXT <container>.<host>.hosts and A of a name that does not
// exist (NXDOMAIN).
func (d Dataset) Queries(n int, zone string) []Query {
	return d.queries(n, func(kind, s, h, c, nx int) Query {
		switch kind {
		case 0:
			return Query{"_80._tcp." + ServiceName(s) + "." + zone, dns.TypeSRV}
		case 1:
			return Query{ServiceName(s) + "." + zone, dns.TypeA}
		case 2:
			return Query{d.ContainerName(h, c) + "." + d.HostName(h) + ".hosts." + zone, dns.TypeTXT}
		default:
			return Query{fmt.Sprintf("nx-%d.%s", nx, zone), dns.TypeA}
		}
	})
}

// ConsulQueries is the same mix in Consul's DNS names: SRV and A of
// <service>.service.consul, A of <host>.node.consul (Consul has no name per
// container; the node is the nearest per-instance lookup), and A of a
// service that does not exist.
func (d Dataset) ConsulQueries(n int) []Query {
	return d.queries(n, func(kind, s, h, c, nx int) Query {
		switch kind {
		case 0:
			return Query{ServiceName(s) + ".service.consul.", dns.TypeSRV}
		case 1:
			return Query{ServiceName(s) + ".service.consul.", dns.TypeA}
		case 2:
			return Query{d.HostName(h) + ".node.consul.", dns.TypeA}
		default:
			return Query{fmt.Sprintf("nx-%d.service.consul.", nx), dns.TypeA}
		}
	})
}

func (d Dataset) queries(n int, mk func(kind, s, h, c, nx int) Query) []Query {
	rng := rand.New(rand.NewPCG(5, uint64(d.Instances())))
	out := make([]Query, n)
	for i := range out {
		h, c := rng.IntN(d.Hosts), rng.IntN(d.PerHost)
		_, s, _ := d.instance(h, c)
		out[i] = mk(i%4, s, h, c, rng.IntN(1_000_000))
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// WriteQueryFile writes qs in dnsperf's format ("name TYPE" per line).
func WriteQueryFile(path string, qs []Query) error {
	var b strings.Builder
	for _, q := range qs {
		b.WriteString(q.Name)
		b.WriteByte(' ')
		b.WriteString(dns.TypeToString[q.Type])
		b.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// forEach runs f(0..n-1), parallel at a time, and returns the first error.
func forEach(n, parallel int, f func(i int) error) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     int
	)
	for range min(parallel, n) {
		wg.Go(func() {
			for {
				mu.Lock()
				if next >= n || firstErr != nil {
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				if err := f(i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}
