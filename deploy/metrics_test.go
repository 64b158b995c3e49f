package deploy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/berthdns/berth/internal/testenv"
)

// metricSources are the packages whose metrics the rules and the dashboard
// use: the three binaries', and CoreDNS's own request metrics (the
// dashboard's query rates), read from the CoreDNS module go.mod pins.
var metricSources = []struct{ module, dir string }{
	{"", "plugin"},
	{"", "exporter"},
	{"", "proxy"},
	{"github.com/coredns/coredns", "plugin/metrics/vars"},
}

// scrapeMetrics are not defined by any of that code: Prometheus makes them.
var scrapeMetrics = map[string]bool{"up": true}

var (
	definedOnce sync.Once
	defined     map[string]string // exposed name -> its metric family
	definedErr  string
)

// definedMetrics is every metric name the sources define, as Prometheus
// exposes it (a histogram's _bucket, _sum and _count), mapped to its family
// (the histogram's name), read from their Go
// source: each prometheus.*Opts literal's Namespace, Subsystem and Name,
// with constants followed through the package and CoreDNS's
// plugin.Namespace.
func definedMetrics(t *testing.T) map[string]string {
	t.Helper()
	definedOnce.Do(func() {
		root := testenv.RepoRoot(t)
		coredns, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/coredns/coredns").Output()
		if err != nil {
			definedErr = "go list -m github.com/coredns/coredns: " + err.Error()
			return
		}
		corednsDir := strings.TrimSpace(string(coredns))
		imported := map[string]string{}
		for k, v := range constants(filepath.Join(corednsDir, "plugin")) {
			imported["plugin."+k] = v
		}
		defined = map[string]string{}
		for _, s := range metricSources {
			dir := filepath.Join(root, s.dir)
			if s.module != "" {
				dir = filepath.Join(corednsDir, s.dir)
			}
			consts := constants(dir)
			for k, v := range imported {
				consts[k] = v
			}
			for name, family := range metricNames(dir, consts) {
				defined[name] = family
			}
		}
	})
	if definedErr != "" {
		t.Fatal(definedErr)
	}
	if len(defined) == 0 {
		t.Fatal("no metric definitions found in the sources")
	}
	return defined
}

// packageFiles parses dir's non-test Go files.
func packageFiles(dir string) []*ast.File {
	fset := token.NewFileSet()
	paths, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		if f, err := parser.ParseFile(fset, p, nil, 0); err == nil {
			files = append(files, f)
		}
	}
	return files
}

// constants is dir's package-level and function-level string constants,
// each resolved to its value where it names another constant.
func constants(dir string) map[string]string {
	exprs := map[string]ast.Expr{}
	for _, f := range packageFiles(dir) {
		ast.Inspect(f, func(n ast.Node) bool {
			if d, ok := n.(*ast.GenDecl); ok && d.Tok == token.CONST {
				for _, spec := range d.Specs {
					vs := spec.(*ast.ValueSpec)
					for i, name := range vs.Names {
						if i < len(vs.Values) {
							exprs[name.Name] = vs.Values[i]
						}
					}
				}
			}
			return true
		})
	}
	out := map[string]string{}
	for name := range exprs {
		if v, ok := resolve(exprs[name], exprs, out, 0); ok {
			out[name] = v
		}
	}
	return out
}

// resolve is the string value of e: a literal, or a constant of consts
// (exprs for the package's own, unresolved yet).
func resolve(e ast.Expr, exprs map[string]ast.Expr, consts map[string]string, depth int) (string, bool) {
	if depth > 8 {
		return "", false
	}
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind == token.STRING {
			s, err := strconv.Unquote(e.Value)
			return s, err == nil
		}
	case *ast.Ident:
		if v, ok := consts[e.Name]; ok {
			return v, true
		}
		if x, ok := exprs[e.Name]; ok {
			return resolve(x, exprs, consts, depth+1)
		}
	case *ast.SelectorExpr:
		if pkg, ok := e.X.(*ast.Ident); ok {
			v, ok := consts[pkg.Name+"."+e.Sel.Name]
			return v, ok
		}
	}
	return "", false
}

// metricNames is the full names of the metrics that dir's
// prometheus.{Counter,Gauge,Histogram,Summary}Opts literals define, each
// mapped to its family.
func metricNames(dir string, consts map[string]string) map[string]string {
	names := map[string]string{}
	for _, f := range packageFiles(dir) {
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			sel, ok := lit.Type.(*ast.SelectorExpr)
			if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
				return true
			}
			kind := strings.TrimSuffix(sel.Sel.Name, "Opts")
			var parts [3]string
			for _, el := range lit.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				key, _ := kv.Key.(*ast.Ident)
				if key == nil {
					continue
				}
				i := map[string]int{"Namespace": 0, "Subsystem": 1, "Name": 2}
				if idx, ok := i[key.Name]; ok {
					parts[idx], _ = resolve(kv.Value, nil, consts, 0)
				}
			}
			if parts[2] == "" {
				return true
			}
			var full []string
			for _, p := range parts {
				if p != "" {
					full = append(full, p)
				}
			}
			name := strings.Join(full, "_")
			var exposed []string
			switch kind {
			case "Histogram":
				exposed = []string{name + "_bucket", name + "_sum", name + "_count"}
			case "Summary":
				exposed = []string{name, name + "_sum", name + "_count"}
			case "Counter", "Gauge":
				exposed = []string{name}
			}
			for _, e := range exposed {
				names[e] = name
			}
			return true
		})
	}
	return names
}

// metricRef is a metric name in a PromQL expression: the project's and
// CoreDNS's prefixes, or up.
var metricRef = regexp.MustCompile(`\b(?:(?:coredns|berth)_[a-z0-9_]+|up)\b`)

// usedMetrics is the metric names expr uses, sorted.
func usedMetrics(expr string) []string {
	// Label values and strings are not names: drop quoted text first.
	expr = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`).ReplaceAllString(expr, `""`)
	seen := map[string]bool{}
	for _, m := range metricRef.FindAllString(expr, -1) {
		seen[m] = true
	}
	var out []string
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// checkMetrics fails the test for each metric of expr that no source
// defines; it returns the metrics expr uses.
func checkMetrics(t *testing.T, where, expr string) []string {
	t.Helper()
	used := usedMetrics(expr)
	if len(used) == 0 {
		t.Errorf("%s: no metric in %q", where, expr)
	}
	for _, m := range used {
		if _, ok := definedMetrics(t)[m]; !ok && !scrapeMetrics[m] {
			t.Errorf("%s uses %s, which no metrics.go defines (renamed?)", where, m)
		}
	}
	return used
}

// TestDefinedMetrics checks the reader itself on names the READMEs
// document, so that an empty or wrong reading cannot pass the other tests.
func TestDefinedMetrics(t *testing.T) {
	d := definedMetrics(t)
	for _, name := range []string{
		"coredns_berth_stale", "coredns_berth_invalid_records_total", "coredns_dns_requests_total",
		"berth_exporter_reconcile_duration_seconds_bucket", "berth_proxy_connections_total",
	} {
		if _, ok := d[name]; !ok {
			t.Errorf("%s not found among the %d metrics read", name, len(d))
		}
	}
	if f := d["berth_exporter_reconcile_duration_seconds_sum"]; f != "berth_exporter_reconcile_duration_seconds" {
		t.Errorf("the family of berth_exporter_reconcile_duration_seconds_sum is %q", f)
	}
	for _, name := range []string{"berth_exporter_reconcile_duration_seconds", "coredns_berth"} {
		if _, ok := d[name]; ok {
			t.Errorf("%s read as a metric", name)
		}
	}
	if got := usedMetrics(`sum by (zone) (rate(coredns_berth_records{zone="berth_x"}[5m])) / up`); strings.Join(got, " ") != "coredns_berth_records up" {
		t.Errorf("usedMetrics: %q", got)
	}
}
