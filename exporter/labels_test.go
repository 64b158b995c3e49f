package exporter

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

var registrator = Mapper{Addrs: []netip.Addr{adv4}, Compat: CompatRegistrator}

// mapResult maps c and fails the test unless it gives a document.
func mapResult(t *testing.T, m Mapper, c *container.InspectResponse) Result {
	t.Helper()
	r, err := m.MapResult(c)
	if err != nil || r.Doc == nil {
		t.Fatalf("MapResult = %+v, %v; want a document", r, err)
	}
	return r
}

// withEnv is docker_test.go's inspect with environment variables.
func withEnv(name string, labels map[string]string, env []string, bindings ...string) *container.InspectResponse {
	c := inspect(name, labels, bindings...)
	c.Config.Env = env
	return c
}

func aliasList(n int) string {
	var parts []string
	for i := 1; i <= n; i++ {
		parts = append(parts, fmt.Sprintf("a%d", i))
	}
	return strings.Join(parts, ",")
}

// TestMapAliases proves berth.alias gives the document's aliases: each
// sanitized as a service name; empty ones, repeats and the service itself
// dropped without a word; reserved, too long and surplus ones left out and
// reported, one SkippedLabel per reason.
func TestMapAliases(t *testing.T) {
	m := Mapper{Addrs: []netip.Addr{adv4}}
	b := "80/tcp=0.0.0.0:8080"
	long := strings.Repeat(strings.Repeat("c", 60)+".", 5)[:248] // a service, but _80._tcp.<it> is over 253
	longer := strings.Repeat(strings.Repeat("d", 50)+".", 6)     // over 253 itself
	tests := []struct {
		name    string
		service string
		alias   string
		want    []string
		skipped []SkippedLabel
	}{
		{"sanitized, empty, repeats and the service dropped", "web.shop", " WWW.Shop, shop,,__,web.shop,www.shop, Web.Shop ",
			[]string{"www.shop", "shop"}, nil},
		{"eight kept, the rest reported", "web", aliasList(11),
			strings.Split(aliasList(8), ","), []SkippedLabel{{LabelAlias, ReasonTooManyAliases, 3, "a9"}}},
		{"repeats do not count towards eight", "web", "a1,a1,a1," + aliasList(8),
			strings.Split(aliasList(8), ","), nil},
		{"reserved and too long reported, the rest kept", "web", "db.hosts,ok," + long + ",HOSTS," + longer,
			[]string{"ok"}, []SkippedLabel{{LabelAlias, ReasonReserved, 2, "db.hosts"}, {LabelAlias, ReasonTooLong, 2, long[:64]}}},
		{"dots only", "web", "...,.", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := withEnv("web", map[string]string{LabelService: tt.service, LabelAlias: tt.alias}, nil, b)
			r := mapResult(t, m, c)
			if !slices.Equal(r.Doc.Aliases, tt.want) {
				t.Errorf("aliases %q, want %q", r.Doc.Aliases, tt.want)
			}
			if !slices.Equal(r.Labels, tt.skipped) {
				t.Errorf("skipped %+v, want %+v", r.Labels, tt.skipped)
			}
			if err := r.Doc.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Run("no label, no aliases", func(t *testing.T) {
		if r := mapResult(t, m, withEnv("web", nil, nil, b)); r.Doc.Aliases != nil || r.Labels != nil {
			t.Errorf("aliases %q, skipped %+v", r.Doc.Aliases, r.Labels)
		}
	})
}

// TestMapRegistrator proves each registrator key, as a label and as a
// variable, under --compat registrator, and its precedence against berth.*
// and Compose's labels.
func TestMapRegistrator(t *testing.T) {
	web := []string{"80/tcp=0.0.0.0:8080", "8081/tcp=0.0.0.0:8081", "53/udp=0.0.0.0:5353"}
	compose := map[string]string{LabelComposeService: "web", LabelComposeProject: "shop"}
	with := func(extra map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range compose {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	service := []struct {
		name   string
		labels map[string]string
		env    []string
		want   string
	}{
		{"SERVICE_NAME variable beats compose", compose, []string{"PATH=/bin", "SERVICE_NAME=Cust DB"}, "cust-db"},
		{"SERVICE_NAME label beats compose", with(map[string]string{"SERVICE_NAME": "db.prod"}), nil, "db.prod"},
		{"the variable beats the label", with(map[string]string{"SERVICE_NAME": "label"}), []string{"SERVICE_NAME=env"}, "env"},
		{"the last variable of a name wins", nil, []string{"SERVICE_NAME=first", "SERVICE_NAME=second"}, "second"},
		{"berth.service beats SERVICE_NAME", with(map[string]string{LabelService: "berth", "SERVICE_NAME": "label"}),
			[]string{"SERVICE_NAME=env"}, "berth"},
		{"an empty SERVICE_NAME is unset", compose, []string{"SERVICE_NAME="}, "web.shop"},
		{"an empty variable unsets the label", with(map[string]string{"SERVICE_NAME": "label"}), []string{"SERVICE_NAME="}, "web.shop"},
		{"the key after SERVICE_ in any case", map[string]string{"SERVICE_Name": "mixed"}, nil, "mixed"},
		{"the prefix in upper case only", map[string]string{"service_name": "lower"}, nil, "web"},
		{"a variable without = is nothing", nil, []string{"SERVICE_NAME"}, "web"},
		{"a port's name is not the service", nil, []string{"SERVICE_80_NAME=api"}, "web"},
	}
	for _, tt := range service {
		t.Run(tt.name, func(t *testing.T) {
			if r := mapResult(t, registrator, withEnv("web", tt.labels, tt.env, web...)); r.Doc.Service != tt.want {
				t.Errorf("service %q, want %q", r.Doc.Service, tt.want)
			}
		})
	}

	portNames := func(d *record.Container) string {
		var s []string
		for _, p := range d.Ports {
			s = append(s, fmt.Sprintf("%d/%s=%s", p.Port, p.Proto, p.Name))
		}
		return strings.Join(s, " ")
	}
	ports := []struct {
		name   string
		labels map[string]string
		env    []string
		want   string
	}{
		{"SERVICE_<port>_NAME names the port", nil, []string{"SERVICE_8081_NAME=Admin UI"}, "53/udp=domain 80/tcp=http 8081/tcp=admin-ui"},
		{"as a label, for every protocol", map[string]string{"SERVICE_53_NAME": "dns"}, nil, "53/udp=dns 80/tcp=http 8081/tcp=unknown"},
		{"berth.port.<P>.name beats it", map[string]string{"berth.port.80.name": "www", "SERVICE_80_NAME": "label"},
			[]string{"SERVICE_80_NAME=env"}, "53/udp=domain 80/tcp=www 8081/tcp=unknown"},
		{"SERVICE_<port>_IGNORE drops the port", nil, []string{"SERVICE_53_IGNORE=true", "SERVICE_8081_IGNORE=1"}, "80/tcp=http"},
		{"SERVICE_<port>_IGNORE as a label", map[string]string{"SERVICE_80_IGNORE": "yes"}, nil, "53/udp=domain 8081/tcp=unknown"},
		{"an empty SERVICE_<port>_IGNORE is unset", nil, []string{"SERVICE_80_IGNORE="}, "53/udp=domain 80/tcp=http 8081/tcp=unknown"},
		{"a port not published is nothing", nil, []string{"SERVICE_9999_IGNORE=1", "SERVICE_9999_NAME=x"}, "53/udp=domain 80/tcp=http 8081/tcp=unknown"},
	}
	for _, tt := range ports {
		t.Run(tt.name, func(t *testing.T) {
			r := mapResult(t, registrator, withEnv("web", tt.labels, tt.env, web...))
			// 8081 has no IANA name: record.PortName gives "".
			if got := strings.ReplaceAll(portNames(r.Doc), "=unknown", "="); got != strings.ReplaceAll(tt.want, "=unknown", "=") {
				t.Errorf("ports %s, want %s", got, tt.want)
			}
		})
	}

	skips := []struct {
		name     string
		m        Mapper
		labels   map[string]string
		env      []string
		reason   string
		inDetail string
	}{
		{"SERVICE_IGNORE variable", registrator, nil, []string{"SERVICE_IGNORE=true"}, ReasonDisabled, "variable SERVICE_IGNORE"},
		{"SERVICE_IGNORE=false ignores too, as in registrator", registrator, nil, []string{"SERVICE_IGNORE=false"}, ReasonDisabled, "false"},
		{"SERVICE_IGNORE label", registrator, map[string]string{"SERVICE_IGNORE": "1"}, nil, ReasonDisabled, "label SERVICE_IGNORE"},
		{"berth.enable=false beats SERVICE_IGNORE's absence", registrator, map[string]string{LabelEnable: "false"}, nil, ReasonDisabled, LabelEnable},
		{"every port ignored", registrator, nil, []string{"SERVICE_80_IGNORE=1", "SERVICE_8081_IGNORE=1", "SERVICE_53_IGNORE=1"},
			ReasonNoPort, "variable SERVICE_53_IGNORE"},
		{"a port name that sanitizes to nothing", registrator, nil, []string{"SERVICE_80_NAME=__"}, ReasonEmptyName, "variable SERVICE_80_NAME"},
		{"a service that sanitizes to nothing", registrator, nil, []string{"SERVICE_NAME=..."}, ReasonEmptyName, "variable SERVICE_NAME"},
		{"a reserved service", registrator, map[string]string{"SERVICE_NAME": "x.hosts"}, nil, ReasonReserved, "hosts"},
		{"explicit: SERVICE_<port>_NAME does not opt in", Mapper{Explicit: true, Addrs: registrator.Addrs, Compat: CompatRegistrator},
			nil, []string{"SERVICE_80_NAME=api"}, ReasonNotOptedIn, "explicit"},
		{"explicit: SERVICE_NAME opts in only under the compat mode", Mapper{Explicit: true, Addrs: registrator.Addrs},
			nil, []string{"SERVICE_NAME=db"}, ReasonNotOptedIn, "explicit"},
	}
	for _, tt := range skips {
		t.Run(tt.name, func(t *testing.T) {
			r, err := tt.m.MapResult(withEnv("web", tt.labels, tt.env, web...))
			se, ok := err.(*SkipError)
			if !ok || se.Reason != tt.reason || !strings.Contains(se.Detail, tt.inDetail) || r.Doc != nil {
				t.Fatalf("MapResult = %+v, %v; want skip %q naming %q", r, err, tt.reason, tt.inDetail)
			}
		})
	}

	t.Run("berth.enable=true beats SERVICE_IGNORE", func(t *testing.T) {
		mapResult(t, registrator, withEnv("web", map[string]string{LabelEnable: "true"}, []string{"SERVICE_IGNORE=1"}, web...))
	})
	t.Run("an empty SERVICE_IGNORE is unset", func(t *testing.T) {
		mapResult(t, registrator, withEnv("web", nil, []string{"SERVICE_IGNORE="}, web...))
	})
	t.Run("explicit: SERVICE_NAME opts in", func(t *testing.T) {
		m := Mapper{Explicit: true, Addrs: registrator.Addrs, Compat: CompatRegistrator}
		if r := mapResult(t, m, withEnv("web", nil, []string{"SERVICE_NAME=db"}, web...)); r.Doc.Service != "db" {
			t.Errorf("service %q", r.Doc.Service)
		}
	})
	t.Run("without the compat mode, registrator's keys are nothing", func(t *testing.T) {
		env := []string{"SERVICE_NAME=db", "SERVICE_IGNORE=1", "SERVICE_80_NAME=api", "SERVICE_8081_IGNORE=1", "SERVICE_TAGS=a,b"}
		r := mapResult(t, Mapper{Addrs: registrator.Addrs}, withEnv("web", map[string]string{"SERVICE_NAME": "db"}, env, web...))
		if r.Doc.Service != "web" || len(r.Doc.Ports) != 3 || r.Doc.Ports[1].Name != "http" || r.Tags != nil {
			t.Errorf("%+v tags %q", r.Doc, r.Tags)
		}
	})
}

// TestMapRegistratorTags proves SERVICE_TAGS is parsed as registrator does
// (commas, "\," inside a tag) into tags that fit one TXT string
// "tags=a,b": repeats and empty ones dropped, bad and surplus ones
// reported.
func TestMapRegistratorTags(t *testing.T) {
	b := "80/tcp=0.0.0.0:8080"
	many := strings.Repeat("t", 60)
	tests := []struct {
		name    string
		labels  map[string]string
		env     []string
		want    []string
		skipped []SkippedLabel
	}{
		{"a variable", nil, []string{"SERVICE_TAGS=master,backups"}, []string{"master", "backups"}, nil},
		{"a label", map[string]string{"SERVICE_TAGS": "www"}, nil, []string{"www"}, nil},
		{"the variable beats the label", map[string]string{"SERVICE_TAGS": "label"}, []string{"SERVICE_TAGS=env"}, []string{"env"}, nil},
		{"spaces trimmed, empty ones and repeats dropped", nil, []string{"SERVICE_TAGS= a ,,b,a,, "}, []string{"a", "b"}, nil},
		{`"\," is a comma in a tag, which TXT cannot carry`, nil, []string{`SERVICE_TAGS=x\,y,z,c:\d`},
			[]string{"z", `c:\d`}, []SkippedLabel{{"variable SERVICE_TAGS", ReasonBadTag, 1, "x,y"}}},
		{"control characters", nil, []string{"SERVICE_TAGS=ok,a\tb,c\x7f,\xff"},
			[]string{"ok"}, []SkippedLabel{{"variable SERVICE_TAGS", ReasonBadTag, 3, "a\tb"}}},
		{"past one TXT string", nil, []string{"SERVICE_TAGS=" + strings.Join([]string{many + "1", many + "2", many + "3", many + "4", many + "5", "s"}, ",")},
			[]string{many + "1", many + "2", many + "3", many + "4"}, []SkippedLabel{{"variable SERVICE_TAGS", ReasonTooManyTags, 2, many + "5"}}},
		{"port tags are not container tags", nil, []string{"SERVICE_80_TAGS=x"}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mapResult(t, registrator, withEnv("web", tt.labels, tt.env, b))
			if !slices.Equal(r.Tags, tt.want) {
				t.Errorf("tags %q, want %q", r.Tags, tt.want)
			}
			if !slices.Equal(r.Labels, tt.skipped) {
				t.Errorf("skipped %+v, want %+v", r.Labels, tt.skipped)
			}
			if txt := "tags=" + strings.Join(r.Tags, ","); len(txt) > 255 {
				t.Errorf("%q: %d octets, over one TXT string", txt, len(txt))
			}
		})
	}
}

func TestSplitEscaped(t *testing.T) {
	for in, want := range map[string][]string{
		"":          {""},
		"a":         {"a"},
		"a,b":       {"a", "b"},
		`a\,b,c`:    {"a,b", "c"},
		`a\\,b`:     {`a\,b`}, // a backslash, then "\,"
		`a\b`:       {`a\b`},
		`trailing\`: {`trailing\`},
		",":         {"", ""},
	} {
		if got := splitEscaped(in); !slices.Equal(got, want) {
			t.Errorf("splitEscaped(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestLabelNotes proves each skipped label value of a container is logged
// and counted once, when it first appears, and again once it changes.
func TestLabelNotes(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	count := NewMetrics().BindingsSkipped // any CounterVec by reason
	notes := labelNotes{}
	first := []SkippedLabel{{LabelAlias, ReasonTooManyAliases, 2, "a9"}}
	for range 3 {
		notes.note(testID, "web", first, log, count)
	}
	if n := testenv.MetricValue(count.WithLabelValues(ReasonTooManyAliases)); n != 1 {
		t.Errorf("counted %v times, want 1", n)
	}
	if n := strings.Count(buf.String(), "label value not published"); n != 1 {
		t.Errorf("logged %d times, want 1:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "key=berth.alias") || !strings.Contains(buf.String(), "reason=too_many_aliases") {
		t.Errorf("log lacks key or reason: %s", buf.String())
	}
	changed := []SkippedLabel{{LabelAlias, ReasonTooManyAliases, 3, "a9"}}
	notes.note(testID, "web", changed, log, count)
	if n := testenv.MetricValue(count.WithLabelValues(ReasonTooManyAliases)); n != 2 {
		t.Errorf("a changed value counted %v times in all, want 2", n)
	}
	notes.note(testID, "web", nil, log, count)
	if _, ok := notes[testID]; ok {
		t.Error("a container without skipped values is still remembered")
	}
	for _, r := range labelSkipReasons {
		if r != strings.ToLower(r) || strings.ContainsAny(r, "- ") {
			t.Errorf("reason %q is not snake_case", r)
		}
	}
	var _ prometheus.Collector = count
}

// TestParseFlagsCompat proves --compat and BERTH_COMPAT take "" and
// "registrator" and refuse anything else, naming the flag.
func TestParseFlagsCompat(t *testing.T) {
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	var out bytes.Buffer
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
		err  string
	}{
		{nil, nil, CompatNone, ""},
		{[]string{"--compat", "registrator"}, nil, CompatRegistrator, ""},
		{nil, map[string]string{"BERTH_COMPAT": "registrator"}, CompatRegistrator, ""},
		{[]string{"--compat", ""}, map[string]string{"BERTH_COMPAT": "registrator"}, CompatNone, ""},
		{[]string{"--compat", "Registrator"}, nil, "", `--compat "Registrator"`},
		{nil, map[string]string{"BERTH_COMPAT": "consul-template"}, "", `--compat "consul-template"`},
	} {
		cfg, err := ParseFlags(tt.args, env(tt.env), &out)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q %v: error %v, want one naming %s", tt.args, tt.env, err, tt.err)
		case tt.err == "" && (err != nil || cfg.Compat != tt.want):
			t.Errorf("%q %v: compat %q, %v; want %q", tt.args, tt.env, cfg.Compat, err, tt.want)
		}
	}
}

// TestExporterAliases runs a container labelled berth.alias under the real
// exporter: its document in Consul has the aliases, sanitized, without the
// service and repeats, at most eight; the project's CoreDNS answers an
// alias's SRV lookup with the container's host port.
func TestExporterAliases(t *testing.T) {
	t.Parallel()
	r := newRig(t, testenv.ConsulOptions{})
	const zone = "c.example.org."
	service := "web-" + r.run + ".shop"
	www := "www-" + r.run + ".shop"
	alias := " WWW-" + r.run + ".Shop ," + service + ",," + www + "," + aliasList(9)
	id := r.runContainer(runOpts{name: "alias", labels: map[string]string{LabelService: service, LabelAlias: alias}})
	r.startExporter(r.config())
	d := r.waitDoc("published", id, testenv.ExporterStartWait, present)
	want := append([]string{www}, strings.Split(aliasList(7), ",")...)
	if !slices.Equal(d.Aliases, want) {
		t.Fatalf("aliases in Consul %q, want %q", d.Aliases, want)
	}
	port := r.hostPort(id, "80/tcp")

	dnsSrv := testenv.StartCoreDNS(t, fmt.Sprintf("%s {\n  berth {\n    consul %s\n    allow_loopback\n  }\n}\n", zone, r.consul.HTTP))
	name := "_80._tcp." + www + "." + zone
	testenv.Eventually(t, testenv.ZoneStartWait, "SRV "+name, func() error {
		in, err := testenv.Exchange("udp", dnsSrv.Addr, name, dns.TypeSRV, 0)
		if err != nil {
			return err
		}
		for _, rr := range in.Answer {
			if s, ok := rr.(*dns.SRV); ok && int(s.Port) == port {
				return nil
			}
		}
		return fmt.Errorf("no SRV with port %d: %v", port, in)
	})
}

// TestRegistratorDocker maps real containers labelled and configured for
// registrator, as Docker reports them, under --compat registrator, and
// publishes the result into a real Consul: the document read back has
// SERVICE_NAME's service (the variable's, not the label's), the port named
// by SERVICE_80_NAME and not the one SERVICE_8080_IGNORE drops; the
// container with SERVICE_IGNORE is skipped.
func TestRegistratorDocker(t *testing.T) {
	t.Parallel()
	r := newRig(t, testenv.ConsulOptions{})
	ctx := context.Background()
	both := network.PortMap{network.MustParsePort("80/tcp"): {{}}, network.MustParsePort("8080/tcp"): {{}}}
	db := r.runContainer(runOpts{name: "reg", ports: both, labels: map[string]string{"SERVICE_NAME": "label-loses"},
		env: []string{"SERVICE_NAME=db-" + r.run, "SERVICE_80_NAME=api", "SERVICE_8080_IGNORE=yes", "SERVICE_TAGS=master,backups"}})
	ignored := r.runContainer(runOpts{name: "regoff", env: []string{"SERVICE_IGNORE=true"}})

	m := Mapper{Addrs: []netip.Addr{loopback}, AllowLoopback: true, Compat: CompatRegistrator}
	desired := map[string]*record.Container{}
	var tags []string
	for _, id := range []string{db, ignored} {
		res, err := r.docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mr, err := m.MapResult(&res.Container)
		if se, ok := err.(*SkipError); id == ignored && (!ok || se.Reason != ReasonDisabled) {
			t.Errorf("SERVICE_IGNORE container: %+v, %v; want skip %q", mr.Doc, err, ReasonDisabled)
		}
		if id == db {
			if err != nil {
				t.Fatal(err)
			}
			desired[id], tags = mr.Doc, mr.Tags
		}
	}
	if !slices.Equal(tags, []string{"master", "backups"}) {
		t.Errorf("tags %q", tags)
	}

	kv := r.consul.Client()
	_, sid := newSession(t, kv, r.prefix, r.host)
	pub, err := NewPublisher(kv, r.prefix, r.host, WithAllowLoopback())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, sid, m.Addrs, desired); err != nil {
		t.Fatal(err)
	}
	st := readHost(t, kv, r.prefix, r.host)
	d := st.docs[db]
	if d == nil || len(st.docs) != 1 {
		t.Fatalf("documents in Consul: %+v", st.docs)
	}
	hostPort := r.hostPort(db, "80/tcp")
	if d.Service != "db-"+r.run || len(d.Ports) != 1 || d.Ports[0].Port != 80 || d.Ports[0].Name != "api" ||
		d.Ports[0].HostPort != hostPort {
		t.Errorf("document %+v, want service db-%s, only port 80 named api on host port %d", d, r.run, hostPort)
	}
	// The published port is the container's: dial it.
	conn, err := net.Dial("tcp", net.JoinHostPort(d.Ports[0].Addr.String(), strconv.Itoa(d.Ports[0].HostPort)))
	if err != nil {
		t.Fatalf("dial the published port: %v", err)
	}
	conn.Close()
}
