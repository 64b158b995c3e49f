package exporter

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// FuzzLabels maps a container with arbitrary labels, environment variables
// and name, with and without --compat registrator and --explicit. The
// mapping never panics; it gives a document or a SkipError with a known
// reason; a document survives record's decoder (Validate) after a JSON
// round trip, unchanged; skipped label values carry known reasons; tags
// fit one TXT string without a comma; mapping twice gives the same bytes.
// labels and env are one "key=value" per line.
func FuzzLabels(f *testing.F) {
	seeds := []struct {
		name, labels, env string
	}{
		{"web", "berth.service=web.shop\nberth.alias=www.shop, Shop ,web.shop,,a1,a2,a3,a4,a5,a6,a7,a8,a9", ""},
		{"web", "berth.alias=db.hosts,x.hosts," + strings.Repeat("c", 250), ""},
		{"web", "SERVICE_NAME=label\nSERVICE_80_NAME=__", "SERVICE_NAME=db\nSERVICE_443_IGNORE=1\nSERVICE_TAGS=a,b\\,c,\x01,a"},
		{"web", "SERVICE_IGNORE=\nberth.enable=true", "SERVICE_IGNORE=false"},
		{"Foo..Bar", "com.docker.compose.service=web\ncom.docker.compose.project=Shop\nberth.port.80.name=Admin UI", "SERVICE_53_NAME=dns\nSERVICE_80_IGNORE=x\nSERVICE_443_IGNORE=x\nSERVICE_53_IGNORE=x"},
		{"web", "berth.priority=5\nberth.weight=65536", ""},
		{"web", "", "SERVICE_TAGS=" + strings.Repeat("t,", 200)},
		{"web", "", `SERVICE_TAGS=prod\044admin,\027,\\`},
	}
	for _, s := range seeds {
		f.Add(s.name, s.labels, s.env, true, false)
		f.Add(s.name, s.labels, s.env, false, true)
	}
	f.Fuzz(func(t *testing.T, name, labels, env string, compat, explicit bool) {
		lm := map[string]string{}
		for _, line := range strings.Split(labels, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				lm[k] = v
			}
		}
		c := inspect("x", lm, "80/tcp=0.0.0.0:8080", "80/tcp=[::]:8080", "443/tcp=198.51.100.7:8443", "53/udp=0.0.0.0:5353")
		c.Name = "/" + name
		c.Config.Env = strings.Split(env, "\n")
		m := Mapper{Explicit: explicit, Addrs: []netip.Addr{adv4, adv6}}
		if compat {
			m.Compat = CompatRegistrator
		}

		r, err := m.MapResult(c)
		if err != nil {
			var se *SkipError
			if !errors.As(err, &se) || !slices.Contains(skipReasons, se.Reason) {
				t.Fatalf("error %v is not a SkipError with a known reason", err)
			}
			if r.Doc != nil {
				t.Fatalf("a skip with a document: %+v", r.Doc)
			}
			return
		}
		if r.Doc == nil {
			t.Fatal("a running container with published ports gave neither a document nor a skip")
		}
		b, err := json.Marshal(r.Doc)
		if err != nil {
			t.Fatal(err)
		}
		back, err := record.DecodeContainer("fuzz", b)
		if err != nil {
			t.Fatalf("the mapped document fails record's validation: %v\n%s", err, b)
		}
		if b2, _ := json.Marshal(back); !bytes.Equal(b, b2) {
			t.Fatalf("the document changed through the decoder:\n%s\n%s", b, b2)
		}
		for _, s := range r.Labels {
			if !slices.Contains(labelSkipReasons, s.Reason) || s.Count < 1 || len(s.Example) > 64 {
				t.Fatalf("skipped label value %+v", s)
			}
		}
		if !compat && r.Tags != nil {
			t.Fatalf("tags %q without the compat mode", r.Tags)
		}
		for i, tag := range r.Tags {
			if record.ValidTag(tag) != nil || slices.Contains(r.Tags[:i], tag) {
				t.Fatalf("tag %q of %q", tag, r.Tags)
			}
		}
		if txt := record.TagsTXT(r.Tags); len(r.Tags) > 0 && len(txt) > record.MaxTagsTXT {
			t.Fatalf("tags take %d octets, over one TXT string", len(txt))
		}
		if len(r.Tags) > 0 {
			// SERVICE_TAGS reach the wire as their bytes (record.EscapeTXT).
			if err := testenv.CheckTXTFields([]string{record.TagsTXT(r.Tags)}, record.EscapeTXT); err != nil {
				t.Fatal(err)
			}
		}
		again, err := m.MapResult(c)
		if b2, _ := json.Marshal(again.Doc); err != nil || !bytes.Equal(b, b2) || !slices.Equal(r.Labels, again.Labels) {
			t.Fatalf("mapped twice: %s, then %s, %v", b, b2, err)
		}
	})
}
