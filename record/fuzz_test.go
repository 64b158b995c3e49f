package record

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/berthdns/berth/internal/testenv"
)

// The seed corpora are real documents as the exporter writes them, in
// testdata/fuzz/<target>/, plus the ones below.

// FuzzDecodeContainer proves DecodeContainer never panics on arbitrary
// bytes, that every document it accepts re-encodes and decodes to the same
// value, and that an accepted document only holds names that are valid DNS
// labels, so the plugin never answers with bad data.
func FuzzDecodeContainer(f *testing.F) {
	f.Add([]byte(validContainer))
	f.Add([]byte(`{"v":1,"id":"0123456789ab","name":"db","service":"db","image":"postgres:17","health":"none","ports":[{"port":5432,"proto":"tcp","addr":"2001:db8::7","host_port":5432}]}`))
	f.Add([]byte(`{"v":2}`))
	f.Add([]byte(`{"v":1,"ports":[{"port":70000}]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"v":1,"id":"0123456789ab","name":"db","service":"db","image":"a\\027b\\013\\010\\000","health":"none","tags":["prod\\044admin"],"ports":[{"port":5432,"proto":"tcp","addr":"192.0.2.7","host_port":5432}]}`))
	const key = "berth/containers/host1/8ab479f3933f"
	f.Fuzz(func(t *testing.T, value []byte) {
		c, err := DecodeContainer(key, value)
		if err != nil {
			if c != nil {
				t.Fatalf("error %v came with a document", err)
			}
			return
		}
		checkContainer(t, c)
		again, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("accepted document does not re-encode: %v", err)
		}
		c2, err := DecodeContainer(key, again)
		if err != nil {
			t.Fatalf("re-encoded document %s is rejected: %v", again, err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the document:\n%+v\n%+v", c, c2)
		}
	})
}

func checkContainer(t *testing.T, c *Container) {
	t.Helper()
	if err := ValidLabel(c.Name); err != nil {
		t.Fatalf("accepted container name %q: %v", c.Name, err)
	}
	if err := ValidService(c.Service); err != nil {
		t.Fatalf("accepted service %q: %v", c.Service, err)
	}
	for _, l := range strings.Split(c.Service, ".") {
		if ValidLabel(l) != nil || l == "" || strings.HasPrefix(l, "_") {
			t.Fatalf("accepted service %q with label %q", c.Service, l)
		}
	}
	if strings.HasSuffix("."+c.Service, "."+HostsLabel) {
		t.Fatalf("accepted service %q ending in the reserved label", c.Service)
	}
	if len(c.ID) < 12 || c.ShortID() != c.ID[:12] {
		t.Fatalf("accepted id %q", c.ID)
	}
	if len("image="+c.Image) > 255 {
		t.Fatalf("accepted image of %d octets, too long for one TXT string", len(c.Image))
	}
	checkTXTWire(t, c)
	if c.Priority < 0 || c.Priority > 65535 || c.Weight < 0 || c.Weight > 65535 {
		t.Fatalf("accepted priority/weight %d/%d", c.Priority, c.Weight)
	}
	if len(c.Ports) == 0 {
		t.Fatal("accepted a document without ports")
	}
	for _, p := range c.Ports {
		if p.Name != "" && ValidLabel(p.Name) != nil {
			t.Fatalf("accepted port name %q", p.Name)
		}
		if !p.Addr.IsValid() || p.Addr.Is4In6() || p.Addr.Zone() != "" || p.Addr.IsUnspecified() {
			t.Fatalf("accepted address %v", p.Addr)
		}
		if p.Port < 1 || p.Port > 65535 || p.HostPort < 1 || p.HostPort > 65535 {
			t.Fatalf("accepted port %d host_port %d", p.Port, p.HostPort)
		}
	}
}

// FuzzDecodeHost is FuzzDecodeContainer for host documents.
func FuzzDecodeHost(f *testing.F) {
	f.Add([]byte(validHost))
	f.Add([]byte(`{"v":1,"name":"h2","addrs":["::ffff:10.0.0.1"],"rev":0}`))
	f.Add([]byte(`{"v":1,"name":"h2","addrs":[]}`))
	f.Add([]byte(`{"v":3,"name":"h2"}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		h, err := DecodeHost("berth/hosts/host1", value)
		if err != nil {
			if h != nil {
				t.Fatalf("error %v came with a document", err)
			}
			return
		}
		if err := ValidLabel(h.Name); err != nil {
			t.Fatalf("accepted host name %q: %v", h.Name, err)
		}
		if len(h.Addrs) == 0 {
			t.Fatal("accepted a host without addresses")
		}
		for _, a := range h.Addrs {
			if !a.IsValid() || a.Is4In6() || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
				t.Fatalf("accepted address %v", a)
			}
		}
		again, err := json.Marshal(h)
		if err != nil {
			t.Fatalf("accepted document does not re-encode: %v", err)
		}
		h2, err := DecodeHost("berth/hosts/host1", again)
		if err != nil {
			t.Fatalf("re-encoded document %s is rejected: %v", again, err)
		}
		if !reflect.DeepEqual(h, h2) {
			t.Fatalf("round trip changed the document:\n%+v\n%+v", h, h2)
		}
	})
}

// checkTXTWire proves an accepted document's free-text TXT fields, escaped
// as the plugin serves them (EscapeTXT), carry exactly their bytes on the
// wire: no escape that miekg/dns decodes ("\\044", "\\027") turns into
// another byte.
func checkTXTWire(t *testing.T, c *Container) {
	t.Helper()
	fields := []string{"image=" + c.Image}
	if len(c.Tags) > 0 {
		fields = append(fields, TagsTXT(c.Tags))
	}
	if err := testenv.CheckTXTFields(fields, EscapeTXT); err != nil {
		t.Fatal(err)
	}
}
