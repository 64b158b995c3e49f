package deploy

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthdns/berth/internal/testenv"
)

// dashboard is the part of Grafana's dashboard model the test checks.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource *struct {
			Type string `json:"type"`
			UID  string `json:"uid"`
		} `json:"datasource"`
		GridPos struct{ H, W, X, Y int } `json:"gridPos"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// berthFamilies are the prefixes of the three binaries' own metrics.
var berthFamilies = []string{"coredns_berth_", "berth_exporter_", "berth_proxy_"}

// TestDashboard checks deploy/grafana/berth.json: valid JSON that Grafana
// can place (unique panel ids, within its 24 columns), every panel querying
// the dashboard's Prometheus variable, every metric it uses defined by the
// code, and every metric the three binaries define shown somewhere.
func TestDashboard(t *testing.T) {
	b := []byte(read(t, filepath.Join(testenv.RepoRoot(t), "deploy", "grafana", "berth.json")))
	if !json.Valid(b) {
		t.Fatal("deploy/grafana/berth.json is not valid JSON")
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("uid %q title %q, %d panels", d.UID, d.Title, len(d.Panels))
	}
	hasVar := false
	for _, v := range d.Templating.List {
		hasVar = hasVar || v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	}
	if !hasVar {
		t.Error("no datasource variable for Prometheus")
	}
	ids := map[int]bool{}
	used := map[string]bool{}
	for _, p := range d.Panels {
		where := "panel " + p.Title
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("%s: id %d missing or used twice", where, p.ID)
		}
		ids[p.ID] = true
		if g := p.GridPos; g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 || g.Y < 0 {
			t.Errorf("%s: gridPos %+v does not fit 24 columns", where, g)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: datasource %+v, want prometheus ${datasource}", where, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no query", where)
		}
		refs := map[string]bool{}
		for _, q := range p.Targets {
			if q.RefID == "" || refs[q.RefID] {
				t.Errorf("%s: refId %q missing or used twice", where, q.RefID)
			}
			refs[q.RefID] = true
			for _, m := range checkMetrics(t, where, q.Expr) {
				used[definedMetrics(t)[m]] = true
			}
		}
	}
	for name, family := range definedMetrics(t) {
		for _, prefix := range berthFamilies {
			if strings.HasPrefix(name, prefix) && !used[family] {
				t.Errorf("%s is on no panel of the dashboard", family)
				used[family] = true // once
			}
		}
	}
}
