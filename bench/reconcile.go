package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthdns/berth/exporter"
	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// Reconcile is one timed reconcile of a host.
type Reconcile struct {
	What          string
	Time          time.Duration
	Sets, Deletes int
	Txns          int
	IndexMoved    bool // Consul's index of the host's subtree changed
}

// ReconcileResult is the exporter's part of part 3.
type ReconcileResult struct {
	Containers int
	StartAll   time.Duration // creating and starting the containers (Docker, not measured further)
	Runs       []Reconcile
}

// RunReconcile times the exporter's reconcile of one host with n real
// containers, from an empty KV and from an up-to-date one, in this process
// with the exporter package itself (exporter.New, Exporter.Once: a full
// listing, an inspect per container, the Publisher's diff and transactions);
// and the Publisher alone on n synthetic documents, the KV part without
// Docker.
func RunReconcile(t *TB, n int, eng Engine) *ReconcileResult {
	ctx := t.Context()
	res := &ReconcileResult{Containers: n}
	docker, image := eng.Client, eng.Image
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	c := consul.Client()

	// The Publisher alone, n synthetic documents on one host.
	d := Dataset{Name: "reconcile-synthetic", Prefix: "recsyn", Hosts: 1, PerHost: n, Replicas: 3}
	prod, err := NewProducer(c, d, record.WriteBoth)
	t.Check(err, "producer")
	for _, what := range []string{"Publisher alone, from empty", "Publisher alone, up to date"} {
		idx := subtreeIndex(t, c, d.Prefix, d.HostName(0))
		before := prod.Stats
		start := time.Now()
		if what == "Publisher alone, from empty" {
			t.Check(prod.PublishAll(ctx, 1), "publish")
		} else {
			t.Check(prod.publish(ctx, 0), "publish")
		}
		res.Runs = append(res.Runs, Reconcile{What: what, Time: time.Since(start),
			Sets: prod.Stats.Sets - before.Sets, Deletes: prod.Stats.Deletes - before.Deletes,
			Txns: prod.Stats.Txns - before.Txns, IndexMoved: subtreeIndex(t, c, d.Prefix, d.HostName(0)) != idx})
	}

	// n real containers.
	run := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	group := "rec-" + run
	start := time.Now()
	err = forEach(n, 4, func(i int) error {
		r, err := docker.ContainerCreate(ctx, client.ContainerCreateOptions{
			Name: fmt.Sprintf("berthbench-%s-%03d", run, i),
			Config: &container.Config{Image: image,
				Labels:       map[string]string{TestLabel: "bench", "berth.bench": group, "berth.service": "rec"},
				ExposedPorts: network.PortSet{network.MustParsePort("80/tcp"): {}}},
			HostConfig: &container.HostConfig{PortBindings: network.PortMap{
				network.MustParsePort("80/tcp"): {{HostIP: netip.IPv4Unspecified()}}}},
		})
		if err != nil {
			return err
		}
		testenv.RemoveContainerOnCleanup(t, docker, r.ID)
		_, err = docker.ContainerStart(ctx, r.ID, client.ContainerStartOptions{})
		return err
	})
	t.Check(err, "containers")
	res.StartAll = time.Since(start)

	const prefix, host = "rec", "benchrec"
	cfg, err := exporter.ParseFlags([]string{"--node", host, "--advertise-addr", benchAdvertiseAddr, "--prefix", prefix,
		"--only-label", "berth.bench=" + group, "--session-ttl", "10m", "--listen", ""},
		func(string) (string, bool) { return "", false }, io.Discard)
	t.Check(err, "exporter flags")
	ccfg := api.DefaultConfig()
	ccfg.Address = consul.HTTP
	logger := slog.New(slog.DiscardHandler)

	e, err := exporter.New(ctx, cfg, docker, ccfg, logger)
	t.Check(err, "exporter")
	once := func(e *exporter.Exporter, what string) {
		idx := subtreeIndex(t, c, prefix, host)
		sets, dels, txns := writes(e)
		start := time.Now()
		t.Check(e.Once(ctx), what)
		el := time.Since(start)
		s2, d2, x2 := writes(e)
		res.Runs = append(res.Runs, Reconcile{What: what, Time: el, Sets: s2 - sets, Deletes: d2 - dels,
			Txns: x2 - txns, IndexMoved: subtreeIndex(t, c, prefix, host) != idx})
	}
	// The baseline: the engine's own share of a reconcile, the listing and
	// one inspect per container the exporter makes, timed by the driver
	// just before the exporter's first pass.
	start = time.Now()
	t.Check(listInspect(ctx, docker, "berth.bench="+group, n), "list and inspect")
	res.Runs = append(res.Runs, Reconcile{What: listInspectRun, Time: time.Since(start)})
	once(e, "exporter, from empty")
	once(e, "exporter, up to date")
	// A restarted exporter: nothing in memory, KV already current.
	e2, err := exporter.New(ctx, cfg, docker, ccfg, logger)
	t.Check(err, "exporter")
	once(e2, "restarted exporter, up to date")

	pairs, _, err := c.KV().List(record.ContainersPrefix(prefix, host), nil)
	t.Check(err, "list")
	if len(pairs) != n {
		t.Fatalf("the exporter published %d documents, want %d", len(pairs), n)
	}
	return res
}

// listInspectRun names the driver's own list + inspect in the results.
const listInspectRun = "the engine alone: list + one inspect per container"

// inspectParallel is how many inspects the exporter has in flight in a
// full reconcile: one, its refresh inspects the listed containers in a
// loop (exporter/reconcile.go). The baseline keeps to it.
const inspectParallel = 1

// listInspect is what the exporter asks the engine in a full reconcile:
// one listing filtered on its --only-label, then an inspect of each
// listed container, inspectParallel at a time.
func listInspect(ctx context.Context, docker *client.Client, label string, want int) error {
	list, err := docker.ContainerList(ctx, client.ContainerListOptions{Filters: make(client.Filters).Add("label", label)})
	if err != nil {
		return err
	}
	if len(list.Items) != want {
		return fmt.Errorf("listed %d containers, want %d", len(list.Items), want)
	}
	return forEach(len(list.Items), inspectParallel, func(i int) error {
		_, err := docker.ContainerInspect(ctx, list.Items[i].ID, client.ContainerInspectOptions{})
		return err
	})
}

// subtreeIndex is Consul's index for host's subtree (host document and
// container documents): it moves with any write there.
func subtreeIndex(t *TB, c *api.Client, prefix, host string) uint64 {
	_, m1, err := c.KV().Get(record.HostKey(prefix, host), nil)
	t.Check(err, "index")
	_, m2, err := c.KV().List(record.ContainersPrefix(prefix, host), nil)
	t.Check(err, "index")
	return max(m1.LastIndex, m2.LastIndex)
}

// writes reads the exporter's own counters of KV writes.
func writes(e *exporter.Exporter) (sets, deletes, txns int) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(e.Metrics()); err != nil {
		return
	}
	mfs, err := reg.Gather()
	if err != nil {
		return
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := int(m.GetCounter().GetValue())
			switch mf.GetName() {
			case "berth_exporter_kv_writes_total":
				for _, l := range m.GetLabel() {
					if l.GetName() == "op" && l.GetValue() == "set" {
						sets = v
					} else if l.GetName() == "op" && l.GetValue() == "delete" {
						deletes = v
					}
				}
			case "berth_exporter_kv_transactions_total":
				txns = v
			}
		}
	}
	return
}
