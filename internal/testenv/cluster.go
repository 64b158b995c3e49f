package testenv

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// ConsulImage is the tag of an image FROM scratch holding the static Consul
// binary hack/get-consul.sh builds.
const ConsulImage = "berth-consul:test"

var consulImage built

// EnsureConsulImage builds ConsulImage once per test binary.
func EnsureConsulImage(t T, cli *client.Client) string {
	t.Helper()
	bin := ConsulBinary(t)
	if _, err := consulImage.get(func() (string, error) {
		return ConsulImage, BuildImage(cli, ConsulImage, map[string]string{"consul": bin},
			"FROM scratch\nCOPY consul /bin/consul\nENTRYPOINT [\"/bin/consul\"]\n")
	}); err != nil {
		t.Fatalf("consul image: %v", err)
	}
	return ConsulImage
}

// ClusterOptions tune StartConsulCluster.
type ClusterOptions struct {
	Servers int               // default 3
	Labels  map[string]string // added to every container (the caller's test label)
	// ExtraHCL is appended to every agent's configuration.
	ExtraHCL string
}

// ConsulNode is one Consul agent container of a cluster.
type ConsulNode struct {
	Name   string     // container and node name
	ID     string     // container ID
	IP     netip.Addr // fixed address on the cluster's network
	HTTP   string     // 127.0.0.1:port, its HTTP API published on loopback
	Server bool
}

// ConsulCluster is a Consul cluster of server containers plus one client
// agent container on a private Docker network. Programs on the host use the
// client agent (HTTP), as they would their local agent in production, so
// that killing a server never kills their agent.
type ConsulCluster struct {
	t       T
	cli     *client.Client
	Net     *Network
	Servers []*ConsulNode
	Agent   *ConsulNode
	HTTP    string // the client agent's published HTTP address

	mu      sync.Mutex
	clients map[string]*api.Client // by address and token, see NodeClient
}

// StartConsulCluster starts the servers and the client agent on net, and
// waits until the cluster has a leader that accepts writes through the
// agent. Every HTTP port is published on 127.0.0.1 only.
func StartConsulCluster(t T, cli *client.Client, net *Network, opts ClusterOptions) *ConsulCluster {
	t.Helper()
	image := EnsureConsulImage(t, cli)
	if opts.Servers == 0 {
		opts.Servers = 3
	}
	c := &ConsulCluster{t: t, cli: cli, Net: net}
	var join []string
	for i := range opts.Servers {
		join = append(join, "-retry-join", net.Addr(byte(10+i)).String())
	}
	hcl := "disable_update_check = true\nperformance { raft_multiplier = 1 }\nports { grpc_tls = -1 }\nconnect { enabled = false }\n" + opts.ExtraHCL
	start := func(name string, ip netip.Addr, server bool) *ConsulNode {
		args := []string{"agent", "-node", name, "-data-dir", "/data", "-client", "0.0.0.0",
			"-bind", ip.String(), "-log-level", "warn", "-hcl", hcl}
		if server {
			args = append(args, "-server", "-bootstrap-expect", strconv.Itoa(opts.Servers))
		}
		args = append(args, join...)
		n := &ConsulNode{Name: name, IP: ip, Server: server}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		res, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
			Name: name,
			Config: &container.Config{Image: image, Cmd: args, Labels: withOwner(opts.Labels),
				ExposedPorts: network.PortSet{network.MustParsePort("8500/tcp"): {}}},
			HostConfig: &container.HostConfig{PortBindings: network.PortMap{
				network.MustParsePort("8500/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1")}}}},
			NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
				net.Name: {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: ip}}}},
		})
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		n.ID = res.ID
		RemoveContainerOnCleanup(t, cli, res.ID)
		if _, err := cli.ContainerStart(ctx, n.ID, client.ContainerStartOptions{}); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		c.refreshPort(n)
		return n
	}
	for i := range opts.Servers {
		c.Servers = append(c.Servers, start(fmt.Sprintf("%s-consul-%d", net.Name, i), net.Addr(byte(10+i)), true))
	}
	c.Agent = start(net.Name+"-consul-agent", net.Addr(9), false)
	c.HTTP = c.Agent.HTTP
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range append([]*ConsulNode{c.Agent}, c.Servers...) {
				t.Logf("%s log tail:\n%s", n.Name, c.Logs(n, 30))
			}
		}
	})
	if _, err := c.WaitLeader(90 * time.Second); err != nil {
		t.Fatalf("consul cluster: %v", err)
	}
	return c
}

// refreshPort reads the node's published HTTP port (it changes when the
// container restarts).
func (c *ConsulCluster) refreshPort(n *ConsulNode) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.cli.ContainerInspect(ctx, n.ID, client.ContainerInspectOptions{})
	if err != nil {
		c.t.Fatalf("inspect %s: %v", n.Name, err)
	}
	bindings := res.Container.NetworkSettings.Ports[network.MustParsePort("8500/tcp")]
	if len(bindings) == 0 {
		c.t.Fatalf("%s: 8500/tcp not published", n.Name)
	}
	if b := bindings[0]; b.HostIP.IsValid() && !b.HostIP.IsLoopback() {
		c.t.Fatalf("%s published on %s, not loopback", n.Name, b.HostIP)
	}
	n.HTTP = "127.0.0.1:" + bindings[0].HostPort
}

// Client is an API client of the cluster's client agent.
func (c *ConsulCluster) Client() *api.Client { return c.NodeClient(c.Agent, "") }

// NodeClient is an API client of one agent, with token if not empty. It is
// made once per address and token: every client has a connection pool of
// its own, so a new one per poll leaves idle connections behind until the
// agent refuses more from this address (429, 200 by default).
func (c *ConsulCluster) NodeClient(n *ConsulNode, token string) *api.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := n.HTTP + " " + token
	if cl := c.clients[key]; cl != nil {
		return cl
	}
	cfg := api.DefaultConfig()
	cfg.Address = n.HTTP
	cfg.Token = token
	cl, err := api.NewClient(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.clients == nil {
		c.clients = map[string]*api.Client{}
	}
	c.clients[key] = cl
	return cl
}

// Leader is the server that leads, as the client agent reports it.
func (c *ConsulCluster) Leader() (*ConsulNode, error) {
	addr, err := c.Client().Status().Leader()
	if err != nil {
		return nil, err
	}
	host, _, _ := strings.Cut(addr, ":")
	for _, n := range c.Servers {
		if n.IP.String() == host {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no leader (agent says %q)", addr)
}

// WaitLeader waits until a leader accepts a write through the client agent,
// and returns it.
func (c *ConsulCluster) WaitLeader(timeout time.Duration) (*ConsulNode, error) {
	deadline := time.Now().Add(timeout)
	kv := c.Client().KV()
	var err error
	for time.Now().Before(deadline) {
		var n *ConsulNode
		if n, err = c.Leader(); err == nil {
			if _, err = kv.Put(&api.KVPair{Key: "berth-test/ready", Value: []byte(time.Now().String())}, nil); err == nil {
				return n, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("no leader accepting writes within %s: %v", timeout, err)
}

// Kill SIGKILLs one agent's container.
func (c *ConsulCluster) Kill(n *ConsulNode) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.cli.ContainerKill(ctx, n.ID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		c.t.Fatalf("kill %s: %v", n.Name, err)
	}
	WaitNotRunning(c.cli, n.ID, 30*time.Second)
}

// Start starts a killed agent again, with its data and address.
func (c *ConsulCluster) Start(n *ConsulNode) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.cli.ContainerStart(ctx, n.ID, client.ContainerStartOptions{}); err != nil {
		c.t.Fatalf("start %s: %v", n.Name, err)
	}
	c.refreshPort(n)
}

// Logs is the tail of an agent's output.
func (c *ConsulCluster) Logs(n *ConsulNode, lines int) string {
	return ContainerLogs(c.cli, n.ID, lines)
}
