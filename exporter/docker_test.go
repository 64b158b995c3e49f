package exporter

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"

	"github.com/berthdns/berth/record"
)

const testID = "8ab479f3933f751cbfabf70afe759d96f3d0d92d97c0f2d50ddbd6094cc77b33"

var (
	adv4 = netip.MustParseAddr("192.0.2.10")
	adv6 = netip.MustParseAddr("2001:db8::10")
)

// inspect builds an inspect result of a running container; bindings are
// "P/proto=hostIP:hostPort" ("" host IP allowed).
func inspect(name string, labels map[string]string, bindings ...string) *container.InspectResponse {
	ports := network.PortMap{}
	for _, b := range bindings {
		p, hostPart, _ := strings.Cut(b, "=")
		i := strings.LastIndexByte(hostPart, ':')
		var ip netip.Addr
		if s := strings.Trim(hostPart[:i], "[]"); s != "" {
			ip = netip.MustParseAddr(s)
		}
		port := network.MustParsePort(p)
		ports[port] = append(ports[port], network.PortBinding{HostIP: ip, HostPort: hostPart[i+1:]})
	}
	return &container.InspectResponse{
		ID:              testID,
		Name:            "/" + name,
		State:           &container.State{Status: container.StateRunning, Running: true},
		Config:          &container.Config{Image: "nginx:1.27", Labels: labels},
		NetworkSettings: &container.NetworkSettings{Ports: ports},
	}
}

func mapOne(t *testing.T, m Mapper, c *container.InspectResponse) *record.Container {
	t.Helper()
	doc, err := m.Map(c)
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	if doc == nil {
		t.Fatal("Map: no document")
	}
	return doc
}

func wantSkip(t *testing.T, m Mapper, c *container.InspectResponse, reason string) {
	t.Helper()
	doc, err := m.Map(c)
	skip, ok := err.(*SkipError)
	if !ok || skip.Reason != reason {
		t.Fatalf("Map = %+v, %v; want skip %q", doc, err, reason)
	}
}

func TestMapBasic(t *testing.T) {
	m := Mapper{Addrs: []netip.Addr{adv4, adv6}}
	doc := mapOne(t, m, inspect("Web_1", nil, "80/tcp=0.0.0.0:32768", "80/tcp=[::]:32768"))
	want := record.Container{V: 1, ID: testID, Name: "web-1", Service: "web-1", Image: "nginx:1.27",
		Health: "none", Priority: 10, Weight: 10, Ports: []record.Port{
			{Port: 80, Proto: "tcp", Name: "http", Addr: adv4, HostPort: 32768},
			{Port: 80, Proto: "tcp", Name: "http", Addr: adv6, HostPort: 32768},
		}}
	if got := *doc; !equalDoc(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func equalDoc(a, b record.Container) bool {
	if len(a.Ports) != len(b.Ports) {
		return false
	}
	for i := range a.Ports {
		if a.Ports[i] != b.Ports[i] {
			return false
		}
	}
	a.Ports, b.Ports = nil, nil
	return a.V == b.V && a.ID == b.ID && a.Name == b.Name && a.Service == b.Service && a.Image == b.Image &&
		a.Health == b.Health && a.Paused == b.Paused && a.Priority == b.Priority && a.Weight == b.Weight
}

func pt(port int, proto, name string, addr netip.Addr, hostPort int) record.Port {
	return record.Port{Port: port, Proto: proto, Name: name, Addr: addr, HostPort: hostPort}
}

func TestMapBindings(t *testing.T) {
	specific := netip.MustParseAddr("198.51.100.7")
	tests := []struct {
		name     string
		addrs    []netip.Addr
		bindings []string
		want     []record.Port
		skip     string
	}{
		{"v4 wildcard only v4 advertised", []netip.Addr{adv4}, []string{"80/tcp=0.0.0.0:8080", "80/tcp=[::]:8080"},
			[]record.Port{pt(80, "tcp", "http", adv4, 8080)}, ""},
		{"v6 wildcard only v6 advertised", []netip.Addr{adv6}, []string{"80/tcp=0.0.0.0:8080", "80/tcp=[::]:8080"},
			[]record.Port{pt(80, "tcp", "http", adv6, 8080)}, ""},
		{"specific host ip", []netip.Addr{adv4}, []string{"5432/tcp=198.51.100.7:5432"},
			[]record.Port{pt(5432, "tcp", "postgresql", specific, 5432)}, ""},
		{"specific host ip without advertise of its family", []netip.Addr{adv6}, []string{"5432/tcp=198.51.100.7:15432"},
			[]record.Port{pt(5432, "tcp", "postgresql", specific, 15432)}, ""},
		{"empty host ip is v4 wildcard", []netip.Addr{adv4}, []string{"6379/tcp=:6379"},
			[]record.Port{pt(6379, "tcp", "redis", adv4, 6379)}, ""},
		{"loopback skipped, others kept", []netip.Addr{adv4}, []string{"80/tcp=127.0.0.1:8080", "443/tcp=0.0.0.0:8443", "8000/tcp=[::1]:8000"},
			[]record.Port{pt(443, "tcp", "https", adv4, 8443)}, ""},
		{"only loopback", []netip.Addr{adv4}, []string{"80/tcp=127.0.0.1:8080"}, nil, ReasonNoPort},
		{"no bindings", []netip.Addr{adv4}, nil, nil, ReasonNoPort},
		{"exposed but unbound", []netip.Addr{adv4}, []string{"80/tcp=0.0.0.0:"}, nil, ReasonNoPort},
		{"wildcard of a family without address", []netip.Addr{adv6}, []string{"80/tcp=0.0.0.0:8080"}, nil, ReasonNoAddress},
		{"udp and tcp, several ports, every binding", []netip.Addr{adv4},
			[]string{"53/udp=0.0.0.0:5353", "53/tcp=0.0.0.0:5353", "9999/tcp=0.0.0.0:1000", "9999/tcp=0.0.0.0:1001", "123/udp=198.51.100.7:123"},
			[]record.Port{pt(53, "tcp", "domain", adv4, 5353), pt(53, "udp", "domain", adv4, 5353),
				pt(123, "udp", "ntp", specific, 123), pt(9999, "tcp", "", adv4, 1000), pt(9999, "tcp", "", adv4, 1001)}, ""},
		{"mapped v4 host ip", []netip.Addr{adv4}, []string{"80/tcp=[::ffff:198.51.100.7]:80"},
			[]record.Port{pt(80, "tcp", "http", specific, 80)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Mapper{Addrs: tt.addrs}
			c := inspect("svc", nil, tt.bindings...)
			if tt.skip != "" {
				wantSkip(t, m, c, tt.skip)
				return
			}
			doc := mapOne(t, m, c)
			if len(doc.Ports) != len(tt.want) {
				t.Fatalf("ports %+v, want %+v", doc.Ports, tt.want)
			}
			for i := range tt.want {
				if doc.Ports[i] != tt.want[i] {
					t.Errorf("port %d: %+v, want %+v", i, doc.Ports[i], tt.want[i])
				}
			}
		})
	}
}

func TestMapLabels(t *testing.T) {
	m := Mapper{Addrs: []netip.Addr{adv4}}
	web := []string{"80/tcp=0.0.0.0:8080", "8081/tcp=0.0.0.0:8081"}

	t.Run("compose", func(t *testing.T) {
		doc := mapOne(t, m, inspect("shop-web-1", map[string]string{
			LabelComposeService: "web", LabelComposeProject: "Shop"}, web...))
		if doc.Service != "web.shop" || doc.Name != "shop-web-1" {
			t.Errorf("service %q name %q", doc.Service, doc.Name)
		}
	})
	t.Run("berth.service wins over compose", func(t *testing.T) {
		doc := mapOne(t, m, inspect("shop-web-1", map[string]string{LabelService: "API.Shop",
			LabelComposeService: "web", LabelComposeProject: "shop"}, web...))
		if doc.Service != "api.shop" {
			t.Errorf("service %q", doc.Service)
		}
	})
	t.Run("compose service sanitizes to nothing", func(t *testing.T) {
		wantSkip(t, m, inspect("web", map[string]string{LabelComposeService: "__", LabelComposeProject: "shop"}, web...), ReasonEmptyName)
	})
	t.Run("compose project missing", func(t *testing.T) {
		doc := mapOne(t, m, inspect("web", map[string]string{LabelComposeService: "x"}, web...))
		if doc.Service != "web" {
			t.Errorf("service %q", doc.Service)
		}
	})
	t.Run("port name, priority, weight", func(t *testing.T) {
		doc := mapOne(t, m, inspect("web", map[string]string{"berth.port.8081.name": "Admin UI",
			"berth.port.80.name": "www", LabelPriority: "5", LabelWeight: "65535"}, web...))
		if doc.Priority != 5 || doc.Weight != 65535 || doc.Ports[0].Name != "www" || doc.Ports[1].Name != "admin-ui" {
			t.Errorf("%+v", doc)
		}
	})
	t.Run("enable false", func(t *testing.T) {
		wantSkip(t, m, inspect("web", map[string]string{LabelEnable: "false", LabelService: "x"}, web...), ReasonDisabled)
	})
	for _, bad := range []map[string]string{{LabelPriority: "-1"}, {LabelWeight: "65536"}, {LabelPriority: "high"},
		{LabelEnable: "maybe"}} {
		t.Run("bad "+strings.Join(keys(bad), ","), func(t *testing.T) {
			wantSkip(t, m, inspect("web", bad, web...), ReasonBadLabel)
		})
	}
}

func keys(m map[string]string) []string { return sortedKeys(m) }

func TestMapExplicit(t *testing.T) {
	m := Mapper{Explicit: true, Addrs: []netip.Addr{adv4}}
	b := "80/tcp=0.0.0.0:8080"
	wantSkip(t, m, inspect("web", nil, b), ReasonNotOptedIn)
	wantSkip(t, m, inspect("web", map[string]string{LabelComposeService: "web", LabelComposeProject: "p"}, b), ReasonNotOptedIn)
	wantSkip(t, m, inspect("web", map[string]string{LabelEnable: "false"}, b), ReasonDisabled)
	if doc := mapOne(t, m, inspect("web", map[string]string{LabelEnable: "true"}, b)); doc.Service != "web" {
		t.Errorf("enable=true: service %q", doc.Service)
	}
	if doc := mapOne(t, m, inspect("web", map[string]string{LabelService: "front"}, b)); doc.Service != "front" {
		t.Errorf("berth.service: service %q", doc.Service)
	}
	wantSkip(t, m, inspect("web", map[string]string{LabelService: "front", LabelEnable: "false"}, b), ReasonDisabled)
}

func TestMapStates(t *testing.T) {
	m := Mapper{Addrs: []netip.Addr{adv4}}
	b := "80/tcp=0.0.0.0:8080"
	for _, tt := range []struct {
		health  container.HealthStatus
		paused  bool
		want    string
		healthy bool
	}{
		{"", false, "none", true},
		{container.Healthy, false, "healthy", true},
		{container.Unhealthy, false, "unhealthy", false},
		{container.Starting, false, "starting", false},
		{container.Healthy, true, "healthy", false},
		{"", true, "none", false},
	} {
		c := inspect("web", nil, b)
		c.State.Paused = tt.paused
		if tt.health != "" {
			c.State.Health = &container.Health{Status: tt.health}
		}
		doc := mapOne(t, m, c)
		if doc.Health != tt.want || doc.Paused != tt.paused || doc.Healthy() != tt.healthy {
			t.Errorf("health %q paused %v: got %q %v healthy=%v", tt.health, tt.paused, doc.Health, doc.Paused, doc.Healthy())
		}
	}
	for _, s := range []*container.State{
		{Status: container.StateExited}, {Status: container.StateRestarting, Running: true, Restarting: true},
		{Status: container.StateCreated}, nil} {
		c := inspect("web", nil, b)
		c.State = s
		if doc, err := m.Map(c); doc != nil || err != nil {
			t.Errorf("state %+v: %+v, %v; want nothing", s, doc, err)
		}
	}
}

func TestMapHostileNames(t *testing.T) {
	m := Mapper{Addrs: []netip.Addr{adv4}}
	b := "80/tcp=0.0.0.0:8080"
	long := strings.Repeat("a", 70)
	t.Run("container name sanitized", func(t *testing.T) {
		doc := mapOne(t, m, inspect("Foo__Bar..baz-", nil, b))
		if doc.Name != "foo-bar-baz" || doc.Service != "foo-bar-baz" {
			t.Errorf("name %q service %q", doc.Name, doc.Service)
		}
	})
	t.Run("long label truncated", func(t *testing.T) {
		doc := mapOne(t, m, inspect(long, nil, b))
		if len(doc.Name) != 63 {
			t.Errorf("name %q", doc.Name)
		}
	})
	t.Run("service with slashes and dots cannot escape", func(t *testing.T) {
		doc := mapOne(t, m, inspect("web", map[string]string{LabelService: "../../hosts/other/_x./"}, b))
		if doc.Service != "hosts-other-x" || doc.ID != testID {
			t.Errorf("service %q", doc.Service)
		}
	})
	for _, tt := range []struct{ name, service, reason string }{
		{"empty service", "___", ReasonEmptyName},
		{"only dots", "...", ReasonEmptyName},
		{"reserved hosts", "db.hosts", ReasonReserved},
		{"reserved hosts alone", "HOSTS", ReasonReserved},
		{"over 253", strings.Repeat(long+".", 4), ReasonTooLong},
		{"srv name over 253", strings.Repeat(strings.Repeat("b", 60)+".", 4)[:244], ReasonTooLong},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantSkip(t, m, inspect("web", map[string]string{LabelService: tt.service}, b), tt.reason)
		})
	}
	t.Run("port name sanitizes to nothing", func(t *testing.T) {
		wantSkip(t, m, inspect("web", map[string]string{"berth.port.80.name": "__"}, b), ReasonEmptyName)
	})
	t.Run("image truncated", func(t *testing.T) {
		c := inspect("web", nil, b)
		c.Config.Image = strings.Repeat("i", 400)
		if doc := mapOne(t, m, c); len(doc.Image) != record.MaxImageLen {
			t.Errorf("image length %d", len(doc.Image))
		}
	})
	t.Run("image with control characters", func(t *testing.T) {
		c := inspect("web", nil, b)
		c.Config.Image = "evil\nimage"
		wantSkip(t, m, c, ReasonInvalid)
	})
}

// TestMapAddrClasses proves no binding on an address record.Publishable
// refuses is published, each is reported with its class, and a loopback
// binding stays unpublished even with the loopback opt-in (which is about
// advertise addresses); a loopback advertise address stands for wildcard
// bindings only with the opt-in.
func TestMapAddrClasses(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		name     string
		m        Mapper
		bindings []string
		want     []record.Port
		skipped  []string // "port host reason"
		skip     string
	}{
		{"each class beside a good binding", Mapper{Addrs: []netip.Addr{adv4}},
			[]string{"80/tcp=0.0.0.0:8080", "81/tcp=127.0.0.1:8081", "82/tcp=[::1]:8082", "83/tcp=169.254.3.3:8083",
				"84/tcp=[fe80::1]:8084", "85/udp=239.1.2.3:8085", "86/udp=[ff05::2]:8086", "87/tcp=[::ffff:127.0.0.2]:8087"},
			[]record.Port{pt(80, "tcp", "http", adv4, 8080)},
			[]string{"81/tcp 127.0.0.1:8081 loopback_address", "82/tcp [::1]:8082 loopback_address",
				"83/tcp 169.254.3.3:8083 link_local_address", "84/tcp [fe80::1]:8084 link_local_address",
				"85/udp 239.1.2.3:8085 multicast_address", "86/udp [ff05::2]:8086 multicast_address",
				"87/tcp 127.0.0.2:8087 loopback_address"}, ""},
		{"loopback binding with the opt-in", Mapper{Addrs: []netip.Addr{lo}, AllowLoopback: true},
			[]string{"80/tcp=0.0.0.0:8080", "81/tcp=127.0.0.1:8081"},
			[]record.Port{pt(80, "tcp", "http", lo, 8080)}, []string{"81/tcp 127.0.0.1:8081 loopback_address"}, ""},
		{"only a link-local binding", Mapper{Addrs: []netip.Addr{adv4}}, []string{"80/tcp=169.254.3.3:80"},
			nil, []string{"80/tcp 169.254.3.3:80 link_local_address"}, ReasonNoPort},
		{"loopback advertise address without the opt-in", Mapper{Addrs: []netip.Addr{lo}}, []string{"80/tcp=0.0.0.0:8080"},
			nil, nil, ReasonNoAddress},
		{"a link-local advertise address is none", Mapper{Addrs: []netip.Addr{netip.MustParseAddr("169.254.1.1"), adv4}},
			[]string{"80/tcp=0.0.0.0:8080"}, []record.Port{pt(80, "tcp", "http", adv4, 8080)}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, skipped, err := tt.m.MapAll(inspect("svc", nil, tt.bindings...))
			var got []string
			for _, b := range skipped {
				got = append(got, b.Port+" "+netip.AddrPortFrom(b.HostIP, uint16(b.HostPort)).String()+" "+b.Reason)
			}
			if !slices.Equal(got, tt.skipped) {
				t.Errorf("skipped bindings %q, want %q", got, tt.skipped)
			}
			if tt.skip != "" {
				if se, ok := err.(*SkipError); !ok || se.Reason != tt.skip {
					t.Fatalf("MapAll = %+v, %v; want skip %q", doc, err, tt.skip)
				}
				return
			}
			if err != nil || doc == nil || !slices.Equal(doc.Ports, tt.want) {
				t.Fatalf("MapAll = %+v, %v; want ports %+v", doc, err, tt.want)
			}
		})
	}
}
