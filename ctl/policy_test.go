package ctl

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

func TestPolicy(t *testing.T) {
	expect(t, []string{"policy", "host1"}, 0, `key "berth/hosts/host1" {
  policy = "write"
}
key_prefix "berth/shards/00/host1/" {
  policy = "write"
}
key_prefix "berth/containers/host1/" {
  policy = "write"
}
node "host1" {
  policy = "write"
}
session "host1" {
  policy = "write"
}
`, "")
	expect(t, []string{"policy", "--plugin", "--prefix", "/ops/berth/"}, 0, `key_prefix "ops/berth/" {
  policy = "read"
}
`, "")
	expect(t, []string{"policy", "--plugin", "-o", "json"}, 0, `{
  "Name": "berth-plugin",
  "Description": "Berth's CoreDNS plugin: reads berth/",
  "Rules": "key_prefix \"berth/\" {\n  policy = \"read\"\n}\n"
}
`, "")
	expect(t, []string{"policy", "Host_1"}, 2, "", "berth policy: host: \"Host_1\" is not a sanitized DNS label (a-z, 0-9, inner -, at most 63 octets)\n")
	expect(t, []string{"policy"}, 2, "", "berth policy: give one HOST, --plugin alone, or check|apply FILE\n")
	expect(t, []string{"policy", "--plugin", "h1"}, 2, "", "berth policy: give one HOST, --plugin alone, or check|apply FILE\n")
}

// berth policy -o json is a body Consul's ACL API takes as it is; with the
// plugin's policy, berth reads the namespace (but not sessions), and with
// an exporter's it writes its own host document and no other.
func TestPolicyConsulACL(t *testing.T) {
	t.Setenv("CONSUL_HTTP_TOKEN", "root-token") // testenv's readiness probe writes a key
	consul := testenv.StartConsul(t, testenv.ConsulOptions{ExtraHCL: `
acl {
  enabled = true
  default_policy = "deny"
  tokens { initial_management = "root-token" }
}`})
	t.Setenv("CONSUL_HTTP_ADDR", consul.HTTP)
	root := consul.Client()
	token := func(args ...string) string {
		t.Helper()
		code, out, errOut := run(append([]string{"policy", "-o", "json"}, args...)...)
		if code != 0 {
			t.Fatalf("berth policy %v: %d %s", args, code, errOut)
		}
		var pol api.ACLPolicy
		if err := json.Unmarshal([]byte(out), &pol); err != nil {
			t.Fatal(err)
		}
		var created *api.ACLPolicy
		var err error
		// The ACL system is up a moment after the leader: a start-up wait.
		testenv.Eventually(t, testenv.PartStartWait, "ACL system ready", func() error {
			created, _, err = root.ACL().PolicyCreate(&pol, nil)
			return err
		})
		tok, _, err := root.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: created.ID}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tok.SecretID
	}
	pluginToken, exporterToken := token("--plugin"), token("h1")

	h := &record.Host{V: 1, Name: "h1", Addrs: nil, Rev: 1}
	h.Addrs = append(h.Addrs, mustAddr("198.51.100.1"))
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = consul.HTTP, exporterToken
	exp, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sid, _, err := exp.Session().CreateNoChecks(&api.SessionEntry{Node: "h1", Name: "berth-exporter:h1", Behavior: api.SessionBehaviorDelete, TTL: "3600s"}, nil)
	if err != nil {
		// The session lives on the host's catalog node, which the exporter
		// registers (exporter/session.go); register it as root.
		if _, err := root.Catalog().Register(&api.CatalogRegistration{Node: "h1", Address: "127.0.0.1"}, nil); err != nil {
			t.Fatal(err)
		}
		if sid, _, err = exp.Session().CreateNoChecks(&api.SessionEntry{Node: "h1", Name: "berth-exporter:h1", Behavior: api.SessionBehaviorDelete, TTL: "3600s"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _, err := exp.KV().Acquire(&api.KVPair{Key: record.HostKey("berth", "h1"), Value: mustJSON(t, h), Session: sid}, nil); err != nil || !ok {
		t.Fatalf("the exporter's token cannot write its host document: %v %v", ok, err)
	}
	if _, err := exp.KV().Put(&api.KVPair{Key: record.HostKey("berth", "h2"), Value: []byte("{}")}, nil); err == nil {
		t.Error("the exporter's token wrote another host's document")
	}
	if _, err := exp.KV().Put(&api.KVPair{Key: record.PolicyKey("berth"), Value: []byte("{}")}, nil); err == nil {
		t.Error("the exporter's token wrote the ownership policy")
	}

	t.Setenv("CONSUL_HTTP_TOKEN", pluginToken)
	expect(t, []string{"check"}, 0, "1 host, 0 containers, no ownership policy (every host may publish every name): everything would be served\n", "")
	idx := func() uint64 {
		p, _, err := root.KV().Get(record.HostKey("berth", "h1"), nil)
		if err != nil || p == nil {
			t.Fatal(err)
		}
		return p.ModifyIndex
	}()
	expect(t, []string{"hosts"}, 0, fmt.Sprintf(`HOST  ADDRS         CONTAINERS  EXPORTER  SESSION           REV  INDEX  LAYOUT
h1    198.51.100.1  0           -         unknown %s  1    %d     1
`, sid[:8], idx), "")
	t.Setenv("CONSUL_HTTP_TOKEN", "not-a-token")
	code, _, errOut := run("check")
	if code != 2 || !strings.Contains(errOut, "ACL not found") {
		t.Errorf("a bad token: exit %d, stderr %q", code, errOut)
	}
}

// TestPolicyDocument proves berth policy check|apply FILE: check says
// whether a document validates, without Consul; apply writes only a
// document that validates, with a check-and-set on the ModifyIndex it reads
// or the one --index gives, and leaves KV as it was otherwise.
func TestPolicyDocument(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	t.Setenv("CONSUL_HTTP_ADDR", consul.HTTP)
	t.Setenv("BERTH_PREFIX", "")
	kv := consul.Client().KV()
	dir := t.TempDir()
	file := func(name, doc string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := file("good.json", `{"v": 1, "default": "deny",
		"rules": [{"service": "web.shop", "hosts": ["host1"]}, {"service": "*", "hosts": ["*"]}],
		"addresses": [{"hosts": ["host1"], "cidrs": ["192.0.2.0/28"]}]}`)
	bad := file("bad.json", `{"v": 1, "default": "maybe", "rules": []}`)
	stored := func() (string, uint64) {
		t.Helper()
		p, _, err := kv.Get(record.PolicyKey("berth"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if p == nil {
			return "", 0
		}
		return string(p.Value), p.ModifyIndex
	}

	expect(t, []string{"policy", "check", good}, 0, good+": valid: 2 rules, default deny, 1 address rule\n", "")
	badErr := `berth policy check: policy ` + bad + `: default is "maybe", want "allow" or "deny": the plugin would serve no service name, alias or address under it` + "\n"
	applyErr := strings.Replace(strings.TrimSuffix(badErr, "\n"), "policy check", "policy apply", 1) + "; nothing written\n"
	expect(t, []string{"policy", "check", bad}, 1, "", badErr)
	expect(t, []string{"policy", "check", bad, "-o", "json"}, 1, `{
  "file": "`+bad+`",
  "valid": false,
  "error": "policy `+bad+`: default is \"maybe\", want \"allow\" or \"deny\"",
  "rules": 0,
  "addresses": 0
}
`, badErr)

	// apply refuses the bad document and writes nothing.
	expect(t, []string{"policy", "apply", bad}, 1, "", applyErr)
	if v, _ := stored(); v != "" {
		t.Fatalf("apply wrote a document that does not validate: %q", v)
	}
	// --index 0: only where there is none; it writes the file as it is.
	code, out, errOut := run("policy", "apply", good, "--index", "0")
	v, index := stored()
	if code != 0 || errOut != "" || out != fmt.Sprintf("berth/policy: written at index %d (was 0): 2 rules, default deny, 1 address rule\n", index) {
		t.Errorf("apply: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if want, _ := os.ReadFile(good); v != string(want) {
		t.Errorf("stored %q, want the file's bytes", v)
	}
	// A stale --index: the key changed since; nothing written.
	expect(t, []string{"policy", "apply", good, "--index", "0"}, 1, "",
		fmt.Sprintf("berth policy apply: berth/policy is at index %d, not 0 (--index): it changed since; nothing written\n", index))
	// The bad document over a good one: the good one stays.
	expect(t, []string{"policy", "apply", bad}, 1, "", applyErr)
	if _, after := stored(); after != index {
		t.Errorf("a refused apply moved the key from index %d to %d", index, after)
	}
	// Without --index, over the index it reads. (Consul keeps the index of
	// a write that changes nothing: write another document.)
	other := file("other.json", `{"v": 1, "default": "allow", "rules": []}`)
	code, out, _ = run("policy", "apply", other, "-o", "json")
	_, now := stored()
	if code != 0 || !strings.Contains(out, fmt.Sprintf(`"index": %d,`, now)) || !strings.Contains(out, fmt.Sprintf(`"was": %d`, index)) || now <= index {
		t.Errorf("apply over index %d: exit %d, now %d, stdout %s", index, code, now, out)
	}

	expect(t, []string{"policy", "check", filepath.Join(dir, "missing.json")}, 2, "",
		"berth policy check: open "+filepath.Join(dir, "missing.json")+": no such file or directory\n")
	expect(t, []string{"policy", "remove", good}, 2, "", "berth policy: \"remove\": give check FILE or apply FILE\n")
	expect(t, []string{"policy", "check", good, "--index", "3"}, 2, "", "berth policy check: --index is apply's\n")
	expect(t, []string{"policy", "host1", "--index", "3"}, 2, "", "berth policy: --index is apply's\n")
	// One argument is a host, even one named check.
	if code, out, _ := run("policy", "check"); code != 0 || !strings.Contains(out, `node "check"`) {
		t.Errorf("berth policy check (a host): exit %d, %q", code, out)
	}
}

// TestCheckPolicyAddresses proves berth check and ls report what the
// plugin does: an address outside its host's ranges (foreign_address), and under
// a policy document that does not validate, every claim and address left
// out, with the summary saying why.
func TestCheckPolicyAddresses(t *testing.T) {
	f := startFixture(t)
	if _, err := f.kv.Put(&api.KVPair{Key: record.PolicyKey(fxPrefix), Value: []byte(`{"v": 1, "default": "allow", "rules": [],
		"addresses": [{"hosts": ["host1"], "cidrs": ["192.0.2.10/32"]}, {"hosts": ["host2"], "cidrs": ["198.51.100.0/24"]}]}`)}, nil); err != nil {
		t.Fatal(err)
	}
	code, out, _ := run("check", "--allow-loopback", "-o", "json")
	var rep checkReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 {
		t.Fatalf("check: exit %d, %v\n%s", code, err, out)
	}
	var foreign []string
	for _, f := range rep.Findings {
		if f.Reason == record.ReasonForeignAddress {
			foreign = append(foreign, f.Host+" "+f.Name)
		}
	}
	// host2 (192.0.2.20) advertises and binds outside 198.51.100.0/24;
	// 127.0.0.1 (lo-1) is outside too.
	want := []string{"host2 host2.hosts.c.example.org.", "host2 lo-1.host2.hosts.c.example.org.",
		"host2 pay-1.host2.hosts.c.example.org.", "host2 web-2.host2.hosts.c.example.org."}
	if !slices.Equal(foreign, want) {
		t.Errorf("foreign_address findings %v, want %v", foreign, want)
	}
	if _, out, _ := run("ls", "web.shop"); !strings.Contains(out, "192.0.2.20:32770  healthy  no: foreign_address") ||
		!strings.Contains(out, "192.0.2.10:32768  healthy  yes") {
		t.Errorf("berth ls web.shop: web-2's endpoint must say foreign_address, web-1's be served:\n%s", out)
	}

	if _, err := f.kv.Put(&api.KVPair{Key: record.PolicyKey(fxPrefix), Value: []byte(`{"v": 1, "default": "maybe", "rules": []}`)}, nil); err != nil {
		t.Fatal(err)
	}
	code, out, _ = run("check")
	last := out[strings.LastIndex(strings.TrimSuffix(out, "\n"), "\n")+1:]
	if code != 1 || !strings.HasPrefix(last, "2 hosts, 5 containers, an ownership policy that does not validate (no claim or address is served): ") ||
		!strings.Contains(last, "1 invalid_policy") || !strings.Contains(last, "refused") {
		t.Errorf("check under a policy that does not validate: exit %d, last line %q", code, last)
	}
	if !strings.Contains(out, "refused           host1  web.shop.c.example.org.") {
		t.Errorf("the owner's claim under a policy that does not validate is not reported refused:\n%s", out)
	}
}
