package exporter

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/berthdns/berth/record"
)

// DryRun lists and maps every running container, and prints the documents
// it would write (and the containers it would skip) as a table.
func (e *Exporter) DryRun(ctx context.Context, w io.Writer) error {
	e.markAll()
	full, dirty := e.take()
	if err := e.refresh(ctx, full, dirty); err != nil {
		return err
	}
	// The host document's key in each layout of the mode; layout 2's rev
	// is the next write's, which a dry run cannot know.
	var keys []string
	if e.pub.Mode().Writes(record.LayoutV1) {
		keys = append(keys, record.HostKey(e.cfg.Prefix, e.host))
	}
	if e.pub.Mode().Writes(record.LayoutV2) {
		keys = append(keys, record.HostRevPrefix(e.cfg.Prefix, e.host)+"<rev>")
	}
	fmt.Fprintf(w, "host %s  addrs %v  kv layout %s  key %s\n\n", e.host, e.mapper.Addrs, e.pub.Mode(), strings.Join(keys, " "))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSERVICE\tHEALTH\tPAUSED\tPRIO/WEIGHT\tPORT\tPORT NAME\tADDRESS")
	for _, id := range sortedKeys(e.desired) {
		d := e.desired[id]
		for _, p := range d.Ports {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%d/%d\t%d/%s\t%s\t%s\n", d.ShortID(), d.Name, d.Service, d.Health,
				d.Paused, d.Priority, d.Weight, p.Port, p.Proto, p.Name, netip.AddrPortFrom(p.Addr, uint16(p.HostPort)))
		}
	}
	for _, id := range sortedKeys(e.skipped) {
		fmt.Fprintf(tw, "%s\t(skipped: %s)\t\t\t\t\t\t\t\n", shortID(id), e.skipped[id])
	}
	return tw.Flush()
}
