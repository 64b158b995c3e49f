package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthdns/berth/internal/testenv"
)

// TestSystemdUnits checks both units with systemd-analyze: verify (which
// only warns about an unknown key or a bad value, so any output fails the
// test) and the offline security review, whose exposure must stay at most
// 2.5 of 10 ("OK"). verify also checks that ExecStart's program exists, so
// the units are checked with it pointing at the binaries the tests use
// instead of /usr/local/bin, and nothing else changed.
func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		testenv.Unavailable(t, "systemd-analyze (Debian package systemd): %v", err)
	}
	root := testenv.RepoRoot(t)
	dir := t.TempDir()
	for _, u := range []struct{ unit, installed, bin string }{
		{"coredns-berth.service", "/usr/local/bin/coredns", testenv.CoreDNSBinary(t)},
		{"berth-proxy.service", "/usr/local/bin/berth-proxy", proxyBinary(t)},
	} {
		unit, installed, bin := u.unit, u.installed, u.bin
		t.Run(unit, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(root, "deploy", "systemd", unit))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), "ExecStart="+installed+" ") && !strings.Contains(string(b), "ExecStart="+installed+"\n") {
				t.Fatalf("%s does not start %s", unit, installed)
			}
			path := filepath.Join(dir, unit)
			write(t, path, []byte(strings.ReplaceAll(string(b), "ExecStart="+installed, "ExecStart="+bin)))
			out, err := exec.Command(analyze, "verify", path).CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
			}
			cmd := exec.Command(analyze, "security", "--offline=true", "--threshold=25", "--no-pager", unit)
			cmd.Dir = dir
			out, err = cmd.CombinedOutput()
			if err != nil {
				t.Errorf("systemd-analyze security %s: exposure over 2.5: %v\n%s", unit, err, out)
			}
		})
	}
}

// proxyBinary is berth-proxy built from the working tree.
func proxyBinary(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "berth-proxy")
	if err := testenv.BuildStatic(testenv.RepoRoot(t), "./proxy/cmd/berth-proxy", out); err != nil {
		t.Fatal(err)
	}
	return out
}
