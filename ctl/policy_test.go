package ctl

import (
	"encoding/json"
	"fmt"
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
	expect(t, []string{"policy"}, 2, "", "berth policy: give one HOST, or --plugin alone\n")
	expect(t, []string{"policy", "--plugin", "h1"}, 2, "", "berth policy: give one HOST, or --plugin alone\n")
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
