package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/proxy"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds berth-proxy once for the tests of this file.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		// Not t.TempDir: the binary outlives the test that built it.
		dir, err := os.MkdirTemp("", "berth-proxy-test-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "berth-proxy")
		buildErr = testenv.BuildStatic(testenv.RepoRoot(t), "./proxy/cmd/berth-proxy", binPath)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// runBinary runs berth-proxy to its exit and returns its exit status and
// its output.
func runBinary(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append([]string{}, env...) // only what the test sets: no BERTH_ from outside
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	}
	t.Fatal(err)
	return 0, ""
}

// --help exits 0 and names every variable; --version exits 0 with the
// version; a bad command line exits 2 with a message, before listening.
func TestCommandLine(t *testing.T) {
	code, out := runBinary(t, nil, "--help")
	if code != 0 {
		t.Errorf("--help: exit %d, want 0", code)
	}
	for _, env := range []string{"BERTH_SOCKS", "BERTH_HTTP", "BERTH_METRICS", "BERTH_DNS", "BERTH_ZONES", "BERTH_ALLOW",
		"BERTH_AUTH_FILE", "BERTH_MAX_CONNS", "BERTH_IDLE_TIMEOUT", "BERTH_LOG_FORMAT"} {
		if !strings.Contains(out, "$"+env) {
			t.Errorf("--help does not name %s:\n%s", env, out)
		}
	}
	code, out = runBinary(t, nil, "--version")
	if want := "berth-proxy " + proxy.Version + " " + runtime.Version() + "\n"; code != 0 || out != want {
		t.Errorf("--version: exit %d, %q; want 0, %q", code, out, want)
	}
	ports := testenv.FreePorts(t, 2)
	listen := []string{"--socks", "127.0.0.1:" + strconv.Itoa(ports[0]), "--http", "127.0.0.1:" + strconv.Itoa(ports[1])}
	for _, tc := range []struct {
		env  []string
		args []string
		says string
	}{
		{nil, []string{"--zones", "c.test", "--dns", "notahost:abc"}, `--dns "notahost:abc": port "abc" is not a number`},
		{nil, []string{"--zones", "c.test", "--max-conns", "0"}, "--max-conns 0: must be at least 1"},
		{nil, []string{"--zones", "c.test", "--handshake-timeout", "0s"}, "--handshake-timeout 0s: must be positive"},
		{nil, []string{}, "nothing is reachable"},
		{[]string{"BERTH_ZONES=c.test", "BERTH_MAX_CONNS=many"}, nil, "BERTH_MAX_CONNS"},
		{nil, []string{"--zones", "c.test", "--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
	} {
		code, out := runBinary(t, tc.env, append(slicesClone(listen), tc.args...)...)
		if code != 2 || !strings.Contains(out, tc.says) {
			t.Errorf("%v %v: exit %d, output %q; want exit 2 saying %q", tc.env, tc.args, code, out, tc.says)
		}
		if strings.Contains(out, "listening") {
			t.Errorf("%v %v: listened before refusing the command line:\n%s", tc.env, tc.args, out)
		}
	}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// --log-format json logs one JSON object a line, and the metrics listener
// serves berth_proxy_build_info with the version.
func TestJSONLogsAndBuildInfo(t *testing.T) {
	ports := testenv.FreePorts(t, 3)
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	cmd := exec.Command(binary(t), "--socks", addr(0), "--http", addr(1), "--metrics", addr(2),
		"--zones", "c.test", "--dns", "127.0.0.1:1")
	cmd.Env = []string{"BERTH_LOG_FORMAT=json"}
	stderr, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stderr.Close() })
	cmd.Stderr = w
	proc, err := testenv.StartProc(cmd)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	// berth-proxy closes its listeners and exits at once on SIGTERM.
	t.Cleanup(func() { proc.Stop(syscall.SIGTERM, testenv.PromptWait) })
	lines := bufio.NewScanner(stderr)
	started := false
	for !started && lines.Scan() {
		var entry map[string]any
		if err := json.Unmarshal(lines.Bytes(), &entry); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", lines.Text(), err)
		}
		if entry["level"] == nil || entry["time"] == nil {
			t.Errorf("log line without level or time: %q", lines.Text())
		}
		started = entry["msg"] == "berth-proxy started"
		if started && entry["version"] != proxy.Version {
			t.Errorf("start line %q does not carry the version %s", lines.Text(), proxy.Version)
		}
	}
	if !started {
		t.Fatalf("berth-proxy ended without logging its start: %v", lines.Err())
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	c := &http.Client{Timeout: testenv.PromptWait}
	resp, err := c.Get("http://" + addr(2) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	want := `berth_proxy_build_info{goversion="` + runtime.Version() + `",version="` + proxy.Version + `"} 1`
	if !strings.Contains(string(body), want+"\n") {
		t.Errorf("metrics lack %s", want)
	}
}
