package bench

import (
	"fmt"
	"time"

	"github.com/berthdns/berth/record"
)

// FleetConfig is one size of part 3's fleet figures: what one host's change
// costs a reader as the fleet grows (issue 11), at a fixed number of
// containers per host, in one KV layout.
type FleetConfig struct {
	Mode          record.WriteMode
	Hosts         int
	PerHost       int
	Probes        int           // quiet changes measured
	ProbeBudget   time.Duration // ... unless this time is up (at least 5)
	ChurnInterval time.Duration // each churning host (1% of the fleet) changes this often
	ChurnDuration time.Duration // measured churn; 0: none at this size
}

// FleetDataset is the dataset of one fleet size: a prefix of its own per
// layout and size.
func FleetDataset(mode record.WriteMode, hosts, perHost int) Dataset {
	name := fmt.Sprintf("fleet-l%s-%d", mode, hosts)
	return Dataset{Name: name, Prefix: name, Hosts: hosts, PerHost: perHost, Replicas: 3}
}

// RunFleet publishes one fleet size in one layout through the exporter's
// Publisher, on a Consul agent of its own, loads it into a berth, and
// measures the bytes that berth reads from Consul per single-host change
// with nothing else changing (scaleRun.quietProbes); with a ChurnDuration,
// also change -> answer of every change while 1% of the hosts each change
// once per ChurnInterval (scaleRun.churnProbes).
func RunFleet(t *TB, cfg FleetConfig) *ScaleResult {
	d := FleetDataset(cfg.Mode, cfg.Hosts, cfg.PerHost)
	r := newScaleRun(t, ScaleConfig{D: d, Mode: cfg.Mode, ChurnHosts: max(1, d.Hosts/100),
		ChurnInterval: cfg.ChurnInterval, ChurnDuration: cfg.ChurnDuration,
		Probes: cfg.Probes, ProbeBudget: cfg.ProbeBudget})
	r.publish()
	r.rawCosts()
	r.startLoaded()
	r.quietProbes()
	if cfg.ChurnDuration > 0 {
		r.churnProbes()
	}
	return r.res
}

// bytesPerChange sums a per-kind byte count (watch, shard, host, policy,
// and any kind the plugin adds).
func bytesPerChange(m map[string]float64) float64 {
	var sum float64
	for _, v := range m {
		sum += v
	}
	return sum
}
