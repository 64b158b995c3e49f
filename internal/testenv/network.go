package testenv

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// RunID is a short random hex string that names one test's containers,
// networks and Consul hosts, so that tests sharing the engine never meet.
func RunID() string {
	b := make([]byte, 4)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

// Network is a Docker bridge network created for one test, with a /24 of
// its own so that containers can be given fixed addresses below .128 (a
// Consul server restarted keeps its address); Docker hands out the upper
// half, so a container started while a server is down cannot take its
// address.
type Network struct {
	ID      string
	Name    string
	Subnet  netip.Prefix
	Gateway netip.Addr // the host's address on the bridge
}

// Addr is the address .n of the network's /24; below 128 for a fixed one.
func (n *Network) Addr(i byte) netip.Addr {
	a := n.Subnet.Addr().As4()
	a[3] = i
	return netip.AddrFrom4(a)
}

// CreateNetwork creates a bridge network named name with labels (and this
// process's OwnerLabel), on a free
// 10.x.y.0/24, and removes it (after the test's containers, which are
// cleaned up first because they were registered later) when the test ends.
func CreateNetwork(t T, cli *client.Client, name string, labels map[string]string) *Network {
	t.Helper()
	labels = withOwner(labels)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var lastErr error
	for range 30 {
		subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + rand.IntN(50)), byte(rand.IntN(256)), 0}), 24)
		gw := subnet.Addr().As4()
		gw[3] = 1
		n := &Network{Name: name, Subnet: subnet, Gateway: netip.AddrFrom4(gw)}
		res, err := cli.NetworkCreate(ctx, name, client.NetworkCreateOptions{
			Driver: "bridge", Labels: labels,
			IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet, Gateway: n.Gateway,
				IPRange: netip.PrefixFrom(n.Addr(128), 25)}}},
		})
		if err != nil {
			lastErr = err
			if strings.Contains(err.Error(), "overlap") || strings.Contains(err.Error(), "in use") {
				continue
			}
			t.Fatalf("create network %s: %v", name, err)
		}
		n.ID = res.ID
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for range 20 {
				if _, err := cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err == nil || strings.Contains(err.Error(), "not found") {
					return
				}
				time.Sleep(250 * time.Millisecond)
			}
			t.Logf("network %s could not be removed", n.Name)
		})
		return n
	}
	t.Fatalf("create network %s: no free subnet: %v", name, lastErr)
	return nil
}

// Disconnect cuts container id off the network.
func (n *Network) Disconnect(t T, cli *client.Client, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.NetworkDisconnect(ctx, n.ID, client.NetworkDisconnectOptions{Container: id, Force: true}); err != nil {
		t.Fatalf("disconnect %s from %s: %v", id[:12], n.Name, err)
	}
}

// Connect attaches container id to the network again, at addr if valid.
func (n *Network) Connect(t T, cli *client.Client, id string, addr netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	es := &network.EndpointSettings{}
	if addr.IsValid() {
		es.IPAMConfig = &network.EndpointIPAMConfig{IPv4Address: addr}
	}
	if _, err := cli.NetworkConnect(ctx, n.ID, client.NetworkConnectOptions{Container: id, EndpointConfig: es}); err != nil {
		t.Fatalf("connect %s to %s: %v", id[:12], n.Name, err)
	}
}

// String names the network for logs.
func (n *Network) String() string { return fmt.Sprintf("%s (%s)", n.Name, n.Subnet) }
