package exporter

import (
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthdns/berth/record"
)

// TestMetricsConvention gathers every series the exporter's metrics and
// BuildInfo produce, with every reason label value in use, and proves each
// family is berth_exporter_<name> with a Help string, and every reason label
// value is snake_case.
func TestMetricsConvention(t *testing.T) {
	t.Parallel()
	m := NewMetrics()
	for _, r := range skipReasons {
		m.ContainersSkipped.WithLabelValues(r).Set(1)
	}
	for _, c := range []string{record.ClassLoopback, record.ClassLinkLocal, record.ClassMulticast} {
		m.BindingsSkipped.WithLabelValues(c).Inc()
	}
	m.Reconciles.WithLabelValues("full", "ok").Inc()
	m.KVWrites.WithLabelValues("set").Inc()
	for _, a := range eventActions {
		m.Events.WithLabelValues(a).Inc()
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m, BuildInfo())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	seen := map[string]bool{}
	for _, f := range families {
		seen[f.GetName()] = true
		if !strings.HasPrefix(f.GetName(), "berth_exporter_") || f.GetHelp() == "" {
			t.Errorf("family %s: want berth_exporter_ and a Help string (help %q)", f.GetName(), f.GetHelp())
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if (l.GetName() == "reason" || l.GetName() == "action") && !snake.MatchString(l.GetValue()) {
					t.Errorf("%s{%s=%q}: not snake_case", f.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
	for _, want := range []string{"berth_exporter_containers_skipped", "berth_exporter_bindings_skipped_total",
		"berth_exporter_build_info", "berth_exporter_docker_events_total"} {
		if !seen[want] {
			t.Errorf("no %s gathered", want)
		}
	}
}
