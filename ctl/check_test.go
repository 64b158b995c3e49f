package ctl

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

func TestCheck(t *testing.T) {
	startFixture(t)
	bad := "berth/containers/host2/" + idBad
	orphan := "REASON            HOST   KEY OR NAME                                                                              WHY\n" +
		"orphan            ghost  berth/containers/ghost/0123456789ab                                                      no host document berth/hosts/ghost nor under berth/shards/" + record.Shard("ghost") + "/ghost/: the plugin serves a host's containers only with its host document\n" +
		"invalid_document  host2  " + bad + "  container document " + bad + ": not a JSON object: invalid character 'n' looking for beginning of object key string\n" +
		"invalid_document  host3  berth/hosts/host3                                                                        host document berth/hosts/host3: name other does not match its key\n"
	loopback := "loopback_address  host2  lo-1.host2.hosts.c.example.org.                                                          127.0.0.1 is a loopback address: not published (only this machine can reach it) unless loopback is explicitly allowed\n"
	refused := `refused           host2  pay.bank.c.example.org.                                                                  claim refused by the ownership policy: rule "pay.bank" gives pay.bank to [host1], not to host2` + "\n"

	expect(t, []string{"check"}, 1, orphan+loopback+refused+
		"2 hosts, 5 containers, an ownership policy: 5 left out of the zone (2 invalid_document, 1 loopback_address, 1 orphan, 1 refused)\n", "")
	expect(t, []string{"check", "--allow-loopback"}, 1, orphan+refused+
		"2 hosts, 5 containers, an ownership policy: 4 left out of the zone (2 invalid_document, 1 orphan, 1 refused)\n", "")
	expect(t, []string{"check", "-o", "json"}, 1, `{
  "ok": false,
  "hosts": 2,
  "containers": 5,
  "policy": true,
  "findings": [
    {
      "reason": "orphan",
      "host": "ghost",
      "key": "berth/containers/ghost/0123456789ab",
      "why": "no host document berth/hosts/ghost nor under berth/shards/`+record.Shard("ghost")+`/ghost/: the plugin serves a host's containers only with its host document"
    },
    {
      "reason": "invalid_document",
      "host": "host2",
      "key": "`+bad+`",
      "why": "container document `+bad+`: not a JSON object: invalid character 'n' looking for beginning of object key string"
    },
    {
      "reason": "invalid_document",
      "host": "host3",
      "key": "berth/hosts/host3",
      "why": "host document berth/hosts/host3: name other does not match its key"
    },
    {
      "reason": "loopback_address",
      "host": "host2",
      "name": "lo-1.host2.hosts.c.example.org.",
      "why": "127.0.0.1 is a loopback address: not published (only this machine can reach it) unless loopback is explicitly allowed"
    },
    {
      "reason": "refused",
      "host": "host2",
      "name": "pay.bank.c.example.org.",
      "why": "claim refused by the ownership policy: rule \"pay.bank\" gives pay.bank to [host1], not to host2"
    }
  ]
}
`, "")
	expect(t, []string{"check", "x"}, 2, "", "berth check: no arguments\n")
}

// A clean prefix exits 0; one bad document anywhere makes it 1. Hostile
// documents (a hidden escape sequence in a key, an oversized value, a later
// version, a name too long for the zone) are findings, printed safely.
func TestCheckCleanAndHostile(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	t.Setenv("CONSUL_HTTP_ADDR", consul.HTTP)
	kv := consul.Client().KV()
	put := func(key string, value []byte) {
		t.Helper()
		if _, err := kv.Put(&api.KVPair{Key: key, Value: value}, nil); err != nil {
			t.Fatal(err)
		}
	}
	h := &record.Host{V: 1, Name: "h1", Addrs: []netip.Addr{netip.MustParseAddr("198.51.100.1")}, Rev: 1}
	put("ops/berth/hosts/h1", mustJSON(t, h))
	put("ops/berth/containers/h1/"+idWeb1, mustJSON(t, ctr(idWeb1, "web-1", "web", "healthy", 10, 80, "tcp", "http", "198.51.100.1", 30080)))
	expect(t, []string{"check", "--prefix", "/ops/berth/", "--zone", "Example.NET."}, 0,
		"1 host, 1 container, no ownership policy (every host may publish every name): everything would be served\n", "")
	expect(t, []string{"check", "--prefix", "ops/berth", "-o", "json"}, 0, `{
  "ok": true,
  "hosts": 1,
  "containers": 1,
  "policy": false,
  "findings": []
}
`, "")

	// Hostile input.
	// A bad id that reverses what a terminal shows after it, written as a
	// transaction: the KV endpoint's URL path refuses it, a body does not.
	if ok, resp, _, err := kv.Txn(api.KVTxnOps{{Verb: api.KVSet, Key: "ops/berth/containers/h1/" + idDB1 + "\u202e", Value: []byte("{}")}}, nil); err != nil || !ok {
		t.Fatalf("txn: %v %v %+v", ok, err, resp)
	}
	put("ops/berth/containers/h1/"+idWeb2, []byte(`{"v":2,"id":"`+idWeb2+`"}`))
	put("ops/berth/containers/h1/"+idPay1, []byte(`{"v":1,"pad":"`+strings.Repeat("x", record.MaxDocumentSize)+`"}`))
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 50)
	put("ops/berth/containers/h1/"+idLo1, mustJSON(t, ctr(idLo1, "long-1", long, "healthy", 10, 80, "tcp", "", "198.51.100.1", 30081)))
	put("ops/berth/policy", []byte(`{"v":1,"default":"maybe"}`))
	code, out, errOut := run("check", "--prefix", "ops/berth", "--zone", "example.net")
	if code != 1 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if strings.ContainsAny(out, "\u202e") {
		t.Errorf("check printed a raw control character:\n%q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	reasons := map[string]string{}
	for _, l := range lines[1 : len(lines)-1] {
		f := strings.Fields(l)
		reasons[f[2]] = f[0]
	}
	want := map[string]string{
		`ops/berth/containers/h1/` + idDB1 + `\xe2\x80\xae`: ProblemInvalid,
		"ops/berth/containers/h1/" + idWeb2:                 ProblemInvalid,
		"ops/berth/containers/h1/" + idPay1:                 ProblemInvalid,
		"ops/berth/policy":                                  ProblemPolicy,
		long + ".example.net.":                              "too_long", // and refused, listed first
		// A policy that does not validate allows no claim and no address,
		// as the plugin applies it (record.ClosedPolicy).
		"web.example.net.":             "refused",
		"h1.hosts.example.net.":        record.ReasonForeignAddress,
		"web-1.h1.hosts.example.net.":  record.ReasonForeignAddress,
		"long-1.h1.hosts.example.net.": record.ReasonForeignAddress,
	}
	for k, r := range want {
		if reasons[k] != r {
			t.Errorf("%s: reason %q, want %q", k, reasons[k], r)
		}
	}
	if len(reasons) != len(want) {
		t.Errorf("findings %v, want %v", reasons, want)
	}
	for _, w := range []string{"unsupported document version 2", "larger than the 65536 allowed", `default is "maybe"`} {
		if !strings.Contains(out, w) {
			t.Errorf("check output lacks %q:\n%s", w, out)
		}
	}
	if last := lines[len(lines)-1]; last != "1 host, 2 containers, an ownership policy that does not validate (no claim or address is served): 10 left out of the zone (3 foreign_address, 3 invalid_document, 1 invalid_policy, 2 refused, 1 too_long)" {
		t.Errorf("summary %q", last)
	}
}

// Consul errors and bad command lines exit 2, so monitoring tells them
// from findings.
func TestCheckErrors(t *testing.T) {
	t.Setenv("CONSUL_HTTP_ADDR", "127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)))
	code, out, errOut := run("check")
	if code != 2 || out != "" || !strings.HasPrefix(errOut, "berth check: consul: list berth/: ") {
		t.Errorf("no Consul: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	expect(t, []string{"check", "--prefix", "a//b"}, 2, "", "berth check: --prefix: prefix \"a//b\": an empty segment (//)\n")
	expect(t, []string{"check", "--zone", "bad zone"}, 2, "", "berth check: --zone \"bad zone\": not a domain name of a-z, 0-9 and - labels\n")
	expect(t, []string{"check", "-o", "yaml"}, 2, "", "berth check: -o \"yaml\": table or json\n")
	expect(t, []string{"frobnicate"}, 2, "", "berth: unknown command \"frobnicate\" (berth --help lists them)\n")
}
