package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// TestLabel marks every container the suite creates (docker rm -f $(docker
// ps -aq -f label=berth.test=bench) removes any leftover).
const TestLabel = "berth.test"

// PropConfig is how part 2 measures.
type PropConfig struct {
	Containers int
	Poll       time.Duration // DNS poll interval while waiting for a change
}

// Timing is one container's way through the pipeline, for a start or for a
// stop/kill. Zero times were not observed.
type Timing struct {
	Call     time.Time // docker start/stop/kill called
	Returned time.Time // ... returned
	Event    time.Time // Docker's start (or die) event, engine time stamp
	KV       time.Time // the container's key appeared in (left) Consul KV
	DNS      time.Time // the SRV answer showed (lost) it
	Method   string
}

// PropResult is part 2.
type PropResult struct {
	Starts, Stops     []Timing
	ExporterEventToKV string // the exporter's own histogram, for comparison
}

// RunPropagation is part 2: real containers of the test service image on the
// local engine, the real exporter binary, Consul and bin/coredns; containers
// are started one at a time, each timed until its SRV record answers, then
// stopped (even ones) or killed (odd ones) one at a time, each timed until
// the record is gone.
func RunPropagation(t *TB, cfg PropConfig, eng Engine) *PropResult {
	ctx := t.Context()
	docker, image := eng.Client, eng.Image
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	run := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	const prefix, host = "prop", "benchprop"
	group := "prop-" + run

	// The exporter, confined to this run's containers. Its advertise
	// address is only data (the driver asks DNS, never dials), outside
	// loopback, which record.Publishable refuses without an opt-in.
	metrics := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	cmd := exec.Command(testenv.ExporterBinary(t), "--node", host, "--advertise-addr", benchAdvertiseAddr,
		"--prefix", prefix, "--only-label", "berth.bench="+group, "--session-ttl", "60s", "--resync", "5m",
		"--listen", metrics, "--log-level", "warn")
	cmd.Env = append(append(os.Environ(), "CONSUL_HTTP_ADDR="+consul.HTTP), eng.Env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t.Check(cmd.Start(), "start berth-exporter")
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})

	berth := StartBerth(t, consul.HTTP, prefix, ServerOptions{})
	_, err := berth.WaitReady(time.Minute)
	t.Check(err, "berth")

	// The containers, created up front so that only start and stop are timed.
	// On Podman a start failed (a run of 2026-12-01 lost its Podman rows
	// so): the host port Podman had given the container, created minutes
	// before, was in use by then. On Podman the driver names ports below
	// the kernel's ephemeral range, which no connection of the run takes.
	hostPorts := make([]string, cfg.Containers)
	if eng.Name == "podman" {
		for i, p := range portsBelowEphemeral(t, cfg.Containers) {
			hostPorts[i] = strconv.Itoa(p)
		}
	}
	ids := make([]string, cfg.Containers)
	err = forEach(cfg.Containers, 4, func(i int) error {
		res, err := docker.ContainerCreate(ctx, client.ContainerCreateOptions{
			Name: fmt.Sprintf("berthbench-%s-%03d", run, i),
			Config: &container.Config{Image: image,
				Labels: map[string]string{TestLabel: "bench", "berth.bench": group,
					"berth.service": fmt.Sprintf("prop-%03d", i)},
				ExposedPorts: network.PortSet{network.MustParsePort("80/tcp"): {}}},
			HostConfig: &container.HostConfig{PortBindings: network.PortMap{
				network.MustParsePort("80/tcp"): {{HostIP: netip.IPv4Unspecified(), HostPort: hostPorts[i]}}}},
		})
		if err != nil {
			return err
		}
		ids[i] = res.ID
		testenv.RemoveContainerOnCleanup(t, docker, res.ID)
		return nil
	})
	t.Check(err, "create containers")

	// Docker's events for these containers, and the KV keys, as they happen.
	evs := newEventLog()
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Podman's event filter matches fewer actions and labels than Docker's:
	// take every container event there and keep this run's by ID.
	filter := make(client.Filters).Add("type", string(events.ContainerEventType))
	if eng.Name == "docker" {
		filter.Add("label", "berth.bench="+group)
	}
	sub := docker.Events(ectx, client.EventsListOptions{Filters: filter})
	go func() {
		for {
			select {
			case m := <-sub.Messages:
				evs.add(m.Actor.ID, string(m.Action), time.Unix(0, m.TimeNano))
			case <-sub.Err:
				return
			}
		}
	}()
	kv := newKVLog()
	go kv.watch(ectx, consul.Client().KV(), record.ContainersPrefix(prefix, host))
	time.Sleep(500 * time.Millisecond) // both subscriptions in place

	res := &PropResult{}
	for i, id := range ids {
		qname := fmt.Sprintf("_80._tcp.prop-%03d.%s", i, Zone)
		tm := Timing{Method: "start", Call: time.Now()}
		_, err := docker.ContainerStart(ctx, id, client.ContainerStartOptions{})
		t.Check(err, "docker start")
		tm.Returned = time.Now()
		tm.DNS, err = pollDNS(ctx, berth.Addr, qname, cfg.Poll, 30*time.Second, func(r *dns.Msg) bool {
			return r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0
		})
		t.Check(err, "waiting for "+qname)
		tm.Event = evs.wait(id, "start", 2*time.Second)
		tm.KV = kv.wait(id, true, 2*time.Second)
		res.Starts = append(res.Starts, tm)
	}
	for i, id := range ids {
		qname := fmt.Sprintf("_80._tcp.prop-%03d.%s", i, Zone)
		tm := Timing{Call: time.Now()}
		if i%2 == 0 {
			tm.Method = "stop"
			_, err = docker.ContainerStop(ctx, id, client.ContainerStopOptions{})
		} else {
			tm.Method = "kill"
			_, err = docker.ContainerKill(ctx, id, client.ContainerKillOptions{})
		}
		t.Check(err, "docker "+tm.Method)
		tm.Returned = time.Now()
		tm.DNS, err = pollDNS(ctx, berth.Addr, qname, cfg.Poll, 30*time.Second, func(r *dns.Msg) bool {
			return r.Rcode == dns.RcodeNameError
		})
		t.Check(err, "waiting for "+qname+" to go")
		tm.Event = evs.wait(id, "die", 2*time.Second)
		tm.KV = kv.wait(id, false, 2*time.Second)
		res.Stops = append(res.Stops, tm)
	}
	if body, err := httpGet("http://" + metrics + "/metrics"); err == nil {
		sum := ParseMetric(body, "berth_exporter_event_to_kv_seconds_sum")[""]
		count := ParseMetric(body, "berth_exporter_event_to_kv_seconds_count")[""]
		if count > 0 {
			res.ExporterEventToKV = fmt.Sprintf("mean %s over %.0f events", ms(time.Duration(sum/count*float64(time.Second))), count)
		}
	}
	return res
}

// pollDNS asks addr for qname's SRV every interval until ok accepts the
// reply, and returns when the accepted reply arrived.
func pollDNS(ctx context.Context, addr, qname string, interval, timeout time.Duration, ok func(*dns.Msg) bool) (time.Time, error) {
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion(qname, dns.TypeSRV)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		r, _, err := c.Exchange(m, addr)
		if err == nil && ok(r) {
			return time.Now(), nil
		}
		time.Sleep(interval)
	}
	return time.Time{}, fmt.Errorf("no change within %s", timeout)
}

type eventLog struct {
	mu   sync.Mutex
	seen map[string]time.Time // id/action -> first time
}

func newEventLog() *eventLog { return &eventLog{seen: map[string]time.Time{}} }

func (l *eventLog) add(id, action string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[id+"/"+action]; !ok {
		l.seen[id+"/"+action] = at
	}
}

func (l *eventLog) wait(id, action string, timeout time.Duration) time.Time {
	deadline := time.Now().Add(timeout)
	for {
		l.mu.Lock()
		at, ok := l.seen[id+"/"+action]
		l.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return at
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// kvLog holds one blocking query on the host's container keys and notes
// when each key first appeared and when it went.
type kvLog struct {
	mu      sync.Mutex
	present map[string]bool
	added   map[string]time.Time
	removed map[string]time.Time
}

func newKVLog() *kvLog {
	return &kvLog{present: map[string]bool{}, added: map[string]time.Time{}, removed: map[string]time.Time{}}
}

func (l *kvLog) watch(ctx context.Context, kv *api.KV, prefix string) {
	var index uint64
	for ctx.Err() == nil {
		keys, meta, err := kv.Keys(prefix, "", (&api.QueryOptions{WaitIndex: index, WaitTime: time.Minute}).WithContext(ctx))
		now := time.Now()
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		index = meta.LastIndex
		cur := map[string]bool{}
		for _, k := range keys {
			cur[k[len(prefix):]] = true
		}
		l.mu.Lock()
		for id := range cur {
			if !l.present[id] {
				if _, ok := l.added[id]; !ok {
					l.added[id] = now
				}
			}
		}
		for id := range l.present {
			if !cur[id] {
				if _, ok := l.removed[id]; !ok {
					l.removed[id] = now
				}
			}
		}
		l.present = cur
		l.mu.Unlock()
	}
}

func (l *kvLog) wait(id string, added bool, timeout time.Duration) time.Time {
	deadline := time.Now().Add(timeout)
	for {
		l.mu.Lock()
		m := l.removed
		if added {
			m = l.added
		}
		at, ok := m[id]
		l.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return at
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// portsBelowEphemeral is n TCP ports free on every address now, below the
// kernel's ephemeral range (net.ipv4.ip_local_port_range), where no
// outgoing connection takes one meanwhile.
func portsBelowEphemeral(t *TB, n int) []int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				low = v
			}
		}
	}
	var ports []int
	for p := low - 1; p > 1024 && len(ports) < n; p-- {
		if l, err := net.Listen("tcp", ":"+strconv.Itoa(p)); err == nil {
			l.Close()
			ports = append(ports, p)
		}
	}
	if len(ports) < n {
		t.Fatalf("%d free ports below the ephemeral range, want %d", len(ports), n)
	}
	return ports
}
