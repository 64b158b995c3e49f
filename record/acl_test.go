package record

import (
	"strings"
	"testing"
)

// TestACL proves the ACL policies name the keys of the layout: an
// exporter's own host document in both layouts and container prefix (with
// the trailing slashes), its node and session; the plugin's whole prefix,
// read-only.
func TestACL(t *testing.T) {
	exp := ExporterACL("berth", "h1")
	for _, want := range []string{`key "berth/hosts/h1" {`, `key_prefix "berth/shards/` + Shard("h1") + `/h1/" {`, `key_prefix "berth/containers/h1/" {`, `node "h1" {`, `session "h1" {`} {
		if !strings.Contains(exp, want) {
			t.Errorf("exporter policy lacks %s:\n%s", want, exp)
		}
	}
	if strings.Contains(exp, PolicyKey("berth")) || strings.Contains(exp, `"read"`) || strings.Count(exp, "{") != 5 {
		t.Errorf("exporter policy reaches beyond its host:\n%s", exp)
	}
	if p := PluginACL("berth"); !strings.Contains(p, `key_prefix "berth/" {`) || strings.Contains(p, "write") {
		t.Errorf("plugin policy:\n%s", p)
	}
}
