package bench

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/berthdns/berth/record"
)

// kinds is a per-kind byte count as "shard 1.2 KiB + host 7.0 KiB + ...",
// in a fixed order, the kinds the plugin reads nothing under left out.
func kinds(m map[string]float64) string { return kindsUnit(m, "") }

func kindsPerSec(m map[string]float64) string { return kindsUnit(m, "/s") }

func kindsUnit(m map[string]float64, unit string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		switch v := m[k]; {
		case v >= 1024:
			parts = append(parts, k+" "+kib(v)+unit)
		case v >= 1:
			parts = append(parts, fmt.Sprintf("%s %.0f B%s", k, v, unit))
		}
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, " + ")
}

// modeText names a write mode as the report says it.
func modeText(m record.WriteMode) string {
	switch m {
	case record.WriteV1:
		return "1"
	case record.WriteV2:
		return "2"
	case record.WriteBoth:
		return "1 and 2 (both)"
	case "":
		return "1"
	}
	return string(m)
}

// fleet returns the fleet result of a layout at hosts hosts; hosts 0 picks
// the smallest (-1 the largest) measured in that layout.
func (r *Report) fleet(mode record.WriteMode, hosts int) *ScaleResult {
	var pick *ScaleResult
	for _, f := range r.Fleet {
		if f.Mode != mode {
			continue
		}
		switch {
		case hosts > 0 && f.D.Hosts == hosts:
			return f
		case hosts == 0 && (pick == nil || f.D.Hosts < pick.D.Hosts),
			hosts < 0 && (pick == nil || f.D.Hosts > pick.D.Hosts):
			pick = f
		}
	}
	return pick
}

// summaryFleet is the fleet figures' rows of the summary (issue 11): bytes
// per single-host change at the largest fleet against the smallest, in
// layout 2 and in layout 1 (before), and change -> answer under 1% host
// churn per minute at the largest.
func (r *Report) summaryFleet(p printf) {
	for _, mode := range []record.WriteMode{record.WriteV2, record.WriteV1} {
		small, large := r.fleet(mode, 0), r.fleet(mode, -1)
		if small == nil || large == nil || small == large {
			continue
		}
		bl, bs := bytesPerChange(large.QuietBytes), bytesPerChange(small.QuietBytes)
		goal := " (goal ≤ 2x)"
		what := "layout 2"
		if mode == record.WriteV1 {
			goal, what = " (before: the reference)", "layout 1"
		}
		p("| 3 | bytes from Consul per single-host change, %s hosts x %d, %s (n=%d) | %s (%s) | %s hosts x %d, same layout: %s (%s) | **%s**%s |\n",
			num(float64(large.D.Hosts)), large.D.PerHost, what, len(large.Quiet), kib(bl), kinds(large.QuietBytes),
			num(float64(small.D.Hosts)), small.D.PerHost, kib(bs), kinds(small.QuietBytes), ratio(bl, bs), goal)
	}
	if l2, l1 := r.fleet(record.WriteV2, -1), r.fleet(record.WriteV1, -1); l2 != nil && l1 != nil && l2.D.Hosts == l1.D.Hosts {
		b2, b1 := bytesPerChange(l2.QuietBytes), bytesPerChange(l1.QuietBytes)
		p("| 3 | bytes per single-host change at %s hosts: layout 2 against layout 1 | %s | layout 1, same size: %s | %s |\n",
			num(float64(l2.D.Hosts)), kib(b2), kib(b1), ratio(b2, b1))
	}
	if l := r.fleet(record.WriteV2, -1); l != nil && l.ChurnMeasured {
		cd, qd := Distribution(l.Churn), Distribution(l.Quiet)
		p("| 3 | change → answer at %s hosts x %d (layout 2) under 1%% host churn (%d hosts each changing once per %s, spread evenly; %.0f s), p50 / p90 / p99 / max (n=%d) | %s | same size, no churn: %s | %s (p99; goal: p99 < 1 s) |\n",
			num(float64(l.D.Hosts)), l.D.PerHost, churnHosts(l), l.ChurnIntervalText, l.ChurnSeconds, cd.N, cd, qd, dratio(cd.P99, qd.P99))
		if l.ChurnChanges > 0 {
			per := bytesPerChange(l.ChurnBytesPerSec) * l.ChurnSeconds / float64(l.ChurnChanges)
			q := bytesPerChange(l.QuietBytes)
			p("| 3 | bytes from Consul per change under that churn (%d changes) | %s | same size, no churn: %s | %s |\n", l.ChurnChanges, kib(per), kib(q), ratio(per, q))
		}
	}
}

// churnHosts is the churning hosts of a fleet run: 1% of them.
func churnHosts(s *ScaleResult) int { return max(1, s.D.Hosts/100) }

// fleetMarkdown is the fleet figures in detail.
func (r *Report) fleetMarkdown(p printf) {
	if len(r.Fleet) == 0 {
		return
	}
	fs := slices.Clone(r.Fleet)
	slices.SortStableFunc(fs, func(a, b *ScaleResult) int {
		if a.Mode != b.Mode {
			return strings.Compare(string(b.Mode), string(a.Mode)) // layout 2 first
		}
		return a.D.Hosts - b.D.Hosts
	})
	p("### Fleet: the cost of one host's change as the fleet grows\n\n")
	p("Issue 11's goal: bytes read from Consul per single-host change at the largest fleet no more than 2x those at the smallest, with the same containers per host. Each size runs on a Consul agent of its own: the producer (`bench.Producer`, the exporter's own `Publisher`) writes the fleet in one KV layout (`record.WriteMode`: layout 2 alone, or layout 1 alone as the reference of what a change cost before), one berth (`bin/coredns`, prometheus in its Corefile) loads it, and the driver changes one container's host port on one host at a time (never a churning host, never the same host twice in a row), waits for `<container>.<host>.hosts` SRV to show it, and reads berth's `coredns_berth_consul_received_bytes_total` before and after the series: the bytes per change are the difference over the changes, by request kind (`watch`: layout 1's host list; `shard`: one of layout 2's %d shards, keys only; `host`: the changed host's documents; `policy`). Under churn, 1%% of the hosts each change one container once per interval, spread evenly over it, and every one of those changes is timed from its KV commit to its answer, with no other change beside them.\n\n", record.ShardCount)
	p("| layout | hosts x containers | published | first load | RSS / live heap | bytes per change (n) | by kind | one GET: host subtree / host list / one shard's keys | commit → answer, quiet, p50 / p90 / p99 / max | under churn: changes, bytes/s, p50 / p90 / p99 / max |\n")
	p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, f := range fs {
		fl := "n/a"
		if len(f.FirstLoad) > 0 {
			fl = ms(f.FirstLoad[0])
		}
		churn := "not measured at this size"
		if f.ChurnMeasured {
			churn = fmt.Sprintf("%d in %.0f s, %s/s, %s", f.ChurnChanges, f.ChurnSeconds, kib(bytesPerChange(f.ChurnBytesPerSec)), Distribution(f.Churn))
		}
		p("| %s | %s x %d | %s (%d txns) | %s | %s / %s | %s (%d) | %s | %s / %s / %s | %s | %s |\n",
			modeText(f.Mode), num(float64(f.D.Hosts)), f.D.PerHost, ms(f.PublishTime), f.Txns, fl,
			mib(f.Loaded.RSS), mib(f.Loaded.HeapAlloc), kib(bytesPerChange(f.QuietBytes)), len(f.Quiet), kinds(f.QuietBytes),
			kib(float64(f.RawHostBytes)), kib(float64(f.RawHostsBytes)), kib(float64(f.RawShardBytes)), Distribution(f.Quiet), churn)
	}
	p("\n")
}
