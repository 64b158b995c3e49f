package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/berthdns/berth/internal/testenv"
)

// promtool finds Prometheus's promtool (Debian package prometheus, which
// hack/deps.sh installs).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Unavailable(t, "promtool (Debian package prometheus; make deps): %v", err)
	}
	return p
}

// TestRules checks deploy/prometheus with promtool: the rules, the example
// scrape configuration that loads them, and the rules' unit tests, which
// fire every alert and check the series that must not.
func TestRules(t *testing.T) {
	bin := promtool(t)
	dir := filepath.Join(testenv.RepoRoot(t), "deploy", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "berth-rules.yml"},
		{"check", "config", "prometheus.yml"},
		{"test", "rules", "berth-rules_test.yml"},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestRulesCoverage checks that every alert has a unit test that fires it,
// and that every metric the rules use is defined by the code (a renamed
// metric would leave an alert that never fires).
func TestRulesCoverage(t *testing.T) {
	dir := filepath.Join(testenv.RepoRoot(t), "deploy", "prometheus")
	rules := read(t, filepath.Join(dir, "berth-rules.yml"))
	tests := read(t, filepath.Join(dir, "berth-rules_test.yml"))
	alerts := regexp.MustCompile(`(?m)^\s*- alert: (\w+)$`).FindAllStringSubmatch(rules, -1)
	if len(alerts) == 0 {
		t.Fatal("no alert in berth-rules.yml")
	}
	for _, a := range alerts {
		// A firing case lists exp_labels under the alert's name.
		fires := regexp.MustCompile(`alertname: ` + a[1] + `\n\s+exp_alerts:\n\s+- exp_labels:`)
		quiet := regexp.MustCompile(`alertname: ` + a[1] + `\n\s+exp_alerts: \[\]`)
		if !fires.MatchString(tests) || !quiet.MatchString(tests) {
			t.Errorf("%s: berth-rules_test.yml needs a case where it fires and one where it does not", a[1])
		}
	}
	exprs := yamlValues(rules, "expr")
	if len(exprs) != len(alerts) {
		t.Fatalf("%d exprs read for %d alerts", len(exprs), len(alerts))
	}
	for i, e := range exprs {
		checkMetrics(t, "berth-rules.yml "+alerts[i][1], e)
	}
}

// yamlValues is the values of every key in a YAML text, each on one line
// or folded (>-) over the more indented lines below.
func yamlValues(text, key string) []string {
	var out []string
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		rest, ok := strings.CutPrefix(strings.TrimLeft(l, " "), key+": ")
		if !ok {
			continue
		}
		if rest != ">-" {
			out = append(out, rest)
			continue
		}
		indent := len(l) - len(strings.TrimLeft(l, " "))
		var folded []string
		for i+1 < len(lines) && len(lines[i+1])-len(strings.TrimLeft(lines[i+1], " ")) > indent {
			i++
			folded = append(folded, strings.TrimSpace(lines[i]))
		}
		out = append(out, strings.Join(folded, " "))
	}
	return out
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
