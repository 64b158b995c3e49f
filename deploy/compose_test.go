package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthdns/berth/internal/testenv"
)

// composeCommand is the Compose CLI installed: docker-compose (v1, Debian's
// package) or the docker CLI's compose plugin (v2).
func composeCommand(t *testing.T) []string {
	t.Helper()
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	if err := exec.Command("docker", "compose", "version").Run(); err == nil {
		return []string{"docker", "compose"}
	}
	testenv.Unavailable(t, "neither docker-compose nor docker compose is installed")
	return nil
}

// TestComposeConfig validates both Compose files with `compose config`, as
// an operator runs them: each copied with its env file made from the
// example, since the real one holds a token and is not in the repository.
// Without that env file, config must fail and name it.
func TestComposeConfig(t *testing.T) {
	compose := composeCommand(t)
	root := testenv.RepoRoot(t)
	for _, tc := range []struct {
		dir, env string
		want     []string
	}{
		{"dns", "dns.env", []string{
			"image: berth-coredns:latest", "restart: unless-stopped",
			"0.0.0.0:53:53/udp", "0.0.0.0:53:53/tcp", "0.0.0.0:9153:9153",
			"/Corefile:/etc/coredns/Corefile:ro", "CONSUL_HTTP_ADDR: consul.example.org:8500",
			"read_only: true", "no-new-privileges:true"}},
		{"exporter", "exporter.env", []string{
			"image: berth-exporter:latest", "restart: unless-stopped", "network_mode: host",
			"/var/run/docker.sock:/var/run/docker.sock:ro", "CONSUL_HTTP_ADDR: consul.example.org:8500",
			"CONSUL_HTTP_TOKEN: ''", "read_only: true", "no-new-privileges:true"}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			src := filepath.Join(root, "deploy", tc.dir)
			dir := t.TempDir()
			for _, name := range []string{"compose.yaml", "Corefile"} {
				if b, err := os.ReadFile(filepath.Join(src, name)); err == nil {
					write(t, filepath.Join(dir, name), b)
				} else if name == "compose.yaml" {
					t.Fatal(err)
				}
			}
			file := filepath.Join(dir, "compose.yaml")
			run := func() (string, error) {
				cmd := exec.Command(compose[0], append(compose[1:], "-f", file, "config")...)
				cmd.Env = withoutBerthImages(os.Environ())
				out, err := cmd.CombinedOutput()
				return string(out), err
			}
			out, err := run()
			if err == nil || !strings.Contains(out, tc.env) {
				t.Errorf("config without %s: %v, want an error naming it:\n%s", tc.env, err, out)
			}
			example, err := os.ReadFile(filepath.Join(src, tc.env+".example"))
			if err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(dir, tc.env), example)
			out, err = run()
			if err != nil {
				t.Fatalf("%s config: %v\n%s", strings.Join(compose, " "), err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("config of deploy/%s/compose.yaml lacks %q:\n%s", tc.dir, w, out)
				}
			}
		})
	}
}

// withoutBerthImages drops the variables that compose.yaml reads, so that
// the test sees the files' defaults.
func withoutBerthImages(env []string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, "BERTH_") {
			out = append(out, e)
		}
	}
	return out
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
