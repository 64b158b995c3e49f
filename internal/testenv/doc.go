// Package testenv owns the real parts that Berth's tests run against: Consul
// agents started from the binary hack/get-consul.sh builds, the local Docker
// Engine with test images built FROM scratch through its API, and the
// project's own CoreDNS build. Nothing here is a mock.
//
// A part that is missing makes the test skip on a developer's machine and
// fail when CI is set, so a green CI run always means the real part ran.
//
// Its files, one role each:
//
//   - consul.go: a Consul -dev agent on loopback ports; cluster.go: a
//     Consul cluster in containers on a test network.
//   - coredns.go: the project's CoreDNS build, started and restarted.
//   - bind.go: a real BIND 9 secondary of a zone.
//   - exporter.go: the built berth-exporter, as a process and an image;
//     process.go: Proc, every process a test starts, in a process group
//     of its own that is killed whole, and waited for to its last member,
//     before the test's folders are removed; liveness and RSS of any
//     process, from /proc.
//   - bounds.go: the waits of every package's tests, each derived from a
//     bound of the product or of a part, with its margin (hack/
//     check-waits.sh keeps other durations out of the tests).
//   - docker.go: the Docker client and test images built FROM scratch;
//     containers.go: container logs and waits; network.go: test networks.
//   - once.go: what a test binary makes once (binaries, images).
//   - doc.go: Unavailable (skip, or fail under CI), free ports, the
//     repository's root.
//   - podman.go: a Podman API service (rootful, or as the rootless user
//     berth-rootless) on a test socket, its image and its own podman
//     commands.
//   - reap.go: labels naming each object's test process, and removal of
//     what dead test processes left.
//   - dnsserver.go: a scriptable DNS server for resolver and proxy tests.
//   - t.go: T, what the parts need of their caller (a test or bench.TB).
//   - wait.go: Eventually, Exchange and MetricValue, the helpers every
//     package's tests share.
//   - txt.go: TXTWire, the bytes a TXT record's strings have on the wire.
//   - target.go: CountingListener and ServeCounting, a service on a test
//     address that counts the connections a proxy sent it.
package testenv

import (
	"io"
	"net"
	"os"
	"path/filepath"
)

// Unavailable skips t, or fails it under CI, because a real part is missing.
func Unavailable(t T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set and a required part is missing: "+format, args...)
	}
	t.Skipf("skipping, a required part is missing: "+format, args...)
}

// FreePort is a loopback port free for both TCP and UDP right now.
func FreePort(t T) int {
	t.Helper()
	return FreePorts(t, 1)[0]
}

// FreePorts is n distinct loopback ports, each free for both TCP and UDP
// right now: all are held until the last is found, so none is picked twice.
func FreePorts(t T, n int) []int {
	t.Helper()
	var ports []int
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 50 * n {
		if len(ports) == n {
			return ports
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
		u, err := net.ListenPacket("udp", l.Addr().String())
		if err != nil {
			continue
		}
		held = append(held, u)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	if len(ports) == n {
		return ports
	}
	t.Fatal("no free loopback port with both TCP and UDP")
	return nil
}

// RepoRoot is the module's root directory, found from the test's working
// directory upwards.
func RepoRoot(t T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}
