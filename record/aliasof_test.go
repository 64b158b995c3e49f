package record

import (
	"strings"
	"testing"
)

// TestPolicyAliasOf proves a rule's alias_of gives the names it covers to
// one service as its aliases (AliasHolder, by the most specific rule), and
// that an alias_of that is no service name, or the rule's own, does not
// validate.
func TestPolicyAliasOf(t *testing.T) {
	p, err := DecodePolicy("berth/policy", []byte(`{"v":1,"default":"deny","rules":[
		{"service":"*","hosts":["*"]},
		{"service":"portal","hosts":["*"],"alias_of":"web.shop"},
		{"service":"*.docs","hosts":["*"],"alias_of":"wiki"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"portal": "web.shop", "a.docs": "wiki", "web.shop": "", "other": ""} {
		if got := p.AliasHolder(name); got != want {
			t.Errorf("AliasHolder(%q) = %q, want %q", name, got, want)
		}
	}
	for _, bad := range []struct{ rule, why string }{
		{`{"service":"portal","hosts":["*"],"alias_of":"Web Shop"}`, "alias_of"},
		{`{"service":"portal","hosts":["*"],"alias_of":"portal"}`, "alias_of names the rule's own service"},
	} {
		_, err := DecodePolicy("berth/policy", []byte(`{"v":1,"default":"deny","rules":[`+bad.rule+`]}`))
		if err == nil || !strings.Contains(err.Error(), bad.why) {
			t.Errorf("policy with %s: %v, want an error about %s", bad.rule, err, bad.why)
		}
	}
}
