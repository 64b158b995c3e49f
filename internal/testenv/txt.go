package testenv

import (
	"fmt"
	"slices"

	"github.com/miekg/dns"
)

// TXTWire is the bytes of rr's character-strings as they go on the wire,
// what `dig +short` would show unescaped: rr packed (miekg/dns decodes
// the presentation escapes \DDD and \X as it packs) and its RDATA split
// into its strings. A TXT unpacked from a message packs back to the same
// RDATA, so for an answer this is what the server sent.
func TXTWire(rr *dns.TXT) ([]string, error) {
	c := *rr
	c.Hdr.Name = "." // one octet: RDATA starts after 1 + 10 octets of header
	buf := make([]byte, dns.MaxMsgSize)
	end, err := dns.PackRR(&c, buf, 0, nil, false)
	if err != nil {
		return nil, err
	}
	var out []string
	for off := 11; off < end; {
		n := int(buf[off])
		if off+1+n > end {
			return nil, fmt.Errorf("character-string of %d octets at %d overruns the RDATA (%d)", n, off, end)
		}
		out = append(out, string(buf[off+1:off+1+n]))
		off += 1 + n
	}
	return out, nil
}

// CheckTXTFields is nil when fields, each written in presentation form by
// escape (record.EscapeTXT, which testenv does not import), go on the wire
// as exactly their own bytes; else it says what went instead.
func CheckTXTFields(fields []string, escape func(string) string) error {
	rr := &dns.TXT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeTXT, Class: dns.ClassINET}}
	for _, f := range fields {
		rr.Txt = append(rr.Txt, escape(f))
	}
	got, err := TXTWire(rr)
	if err != nil {
		return err
	}
	if !slices.Equal(got, fields) {
		return fmt.Errorf("TXT strings on the wire %q, want the document's %q", got, fields)
	}
	return nil
}
