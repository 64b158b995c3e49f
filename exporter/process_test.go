package exporter

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// proc is a berth-exporter subprocess.
type proc struct {
	*testenv.Proc
	out testenv.LockedBuffer
}

// env is the environment every subprocess gets: this rig's host, address and
// containers, configured through the environment as the image would be.
func (r *rig) env() []string {
	return append(os.Environ(),
		"DOCKER_HOST="+r.dockerHost(),
		"CONSUL_HTTP_ADDR="+r.consul.HTTP,
		"BERTH_NODE="+r.host,
		"BERTH_ADVERTISE_ADDR=127.0.0.1",
		"BERTH_ALLOW_LOOPBACK=true", // the test's world is this machine
		"BERTH_ONLY_LABEL=berth.test.run="+r.run,
		"BERTH_LISTEN=127.0.0.1:0",
		"BERTH_LOG_LEVEL=debug",
	)
}

func (r *rig) startProc(args ...string) *proc {
	r.t.Helper()
	p := &proc{}
	cmd := exec.Command(testenv.ExporterBinary(r.t), args...)
	cmd.Env = r.env()
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	r.t.Cleanup(func() {
		if r.t.Failed() {
			r.t.Logf("exporter %v output:\n%s", args, p.out.String())
		}
	})
	p.Proc = testenv.StartProcT(r.t, cmd)
	return p
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(testenv.ExporterExitWait):
		t.Fatalf("exporter did not exit within %v after %v", testenv.ExporterExitWait, sig)
	}
}

func (r *rig) holder(key string) string {
	r.t.Helper()
	pair, _, err := r.kv.KV().Get(key, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	if pair == nil {
		return ""
	}
	return pair.Session
}

// TestProcessKillRestartExpire runs the built binary: SIGKILL it and start
// another at once, and the records never disappear for one moment over
// more than twice the TTL (the new one adopted the session); then SIGKILL
// that one too and see its records expire within twice the TTL.
func TestProcessKillRestartExpire(t *testing.T) {
	t.Parallel()
	forEachEngine(t, testProcessKillRestartExpire)
}

func testProcessKillRestartExpire(t *testing.T, engine string) {
	r := newEngineRig(t, engine, testenv.ConsulOptions{})
	c1 := r.runContainer(runOpts{name: "steady"})
	a := r.startProc()
	r.waitDoc("published by the first exporter", c1, testenv.ExporterStartWait, present)
	hostKey := record.HostKey(r.prefix, r.host)
	session := r.holder(hostKey)
	if session == "" {
		t.Fatal("host document has no session")
	}

	a.signal(t, syscall.SIGKILL)
	b := r.startProc()
	c2 := r.runContainer(runOpts{name: "later"})
	ttl := DefaultConfig().SessionTTL
	// Watched for as long as the killed exporter's session could take to
	// expire, had the new one not adopted it.
	watchUntil := time.Now().Add(testenv.SessionExpiryWait(ttl))
	checks := 0
	for time.Now().Before(watchUntil) {
		if d := r.doc(c1); d == nil {
			t.Fatalf("gap: the document of a running container vanished %s after the restart", time.Until(watchUntil))
		}
		if h := r.holder(hostKey); h == "" {
			t.Fatal("gap: the host document vanished after the restart")
		}
		checks++
		time.Sleep(testenv.PollInterval)
	}
	t.Logf("no gap over %d checks in %s", checks, testenv.SessionExpiryWait(ttl))
	if r.doc(c2) == nil {
		t.Error("the restarted exporter did not publish a new container")
	}
	if h := r.holder(record.ContainerKey(r.prefix, r.host, c1)); h != session {
		t.Errorf("container key held by %q, want the adopted session %q", h, session)
	}
	if !strings.Contains(b.out.String(), "adopted the session") {
		t.Error("the restarted exporter did not log that it adopted the session")
	}

	b.signal(t, syscall.SIGKILL)
	killed := time.Now()
	r.waitDoc("expired after SIGKILL", c1, testenv.SessionExpiryWait(ttl), absent)
	// The session's keys go in the one invalidation that removed c1's.
	r.waitDoc("expired after SIGKILL", c2, testenv.ConsulRoundWait, absent)
	if h := r.holder(hostKey); h != "" {
		t.Error("host document outlived the session")
	}
	took := time.Since(killed)
	t.Logf("records expired %s after SIGKILL (TTL %s)", took.Round(100*time.Millisecond), ttl)
	if took < ttl/2 {
		t.Errorf("records vanished after %s, sooner than the session could expire", took)
	}
}

// TestProcessSigterm: a clean stop leaves the records (to expire, or to be
// adopted by the next start) and exits 0, and --deregister-on-exit removes
// them. The binary's /metrics has the build-info series.
func TestProcessSigterm(t *testing.T) {
	t.Parallel()
	r := newRig(t, testenv.ConsulOptions{})
	c := r.runContainer(runOpts{name: "svc"})

	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	p := r.startProc("--listen", listen)
	r.waitDoc("published", c, testenv.ExporterStartWait, present)
	buildInfo := fmt.Sprintf(`berth_exporter_build_info{goversion=%q,version=%q} 1`, runtime.Version(), Version)
	if m := get(t, "http://"+listen+"/metrics", 200); !strings.Contains(m, buildInfo) {
		t.Errorf("/metrics of the binary lacks %s", buildInfo)
	}
	p.signal(t, syscall.SIGTERM)
	if p.Cmd.ProcessState.ExitCode() != 0 {
		t.Errorf("exit code %d after SIGTERM", p.Cmd.ProcessState.ExitCode())
	}
	if r.doc(c) == nil {
		t.Fatal("records removed on SIGTERM without --deregister-on-exit")
	}

	p = r.startProc("--deregister-on-exit")
	testenv.EventuallyTrue(t, testenv.ExporterStartWait, "the restarted exporter adopts the session", func() bool {
		return strings.Contains(p.out.String(), "adopted the session")
	})
	if r.doc(c) == nil {
		t.Fatal("records gone after restart")
	}
	p.signal(t, syscall.SIGTERM)
	if r.doc(c) != nil || r.holder(record.HostKey(r.prefix, r.host)) != "" {
		t.Error("records remain after SIGTERM with --deregister-on-exit")
	}
	sessions, _, err := r.kv.Session().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sessions {
		if s.Name == SessionName(r.host) {
			t.Errorf("session %s remains after deregistering", s.ID)
		}
	}
}

// TestProcessDryRunOnce: --dry-run prints the table and writes nothing;
// --once writes and exits.
func TestProcessDryRunOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, testenv.ConsulOptions{})
	c := r.runContainer(runOpts{name: "table", labels: map[string]string{LabelService: "tbl.shop"}})
	r.runContainer(runOpts{name: "hidden", labels: map[string]string{LabelEnable: "false"}})

	cmd := exec.Command(testenv.ExporterBinary(t), "--dry-run")
	cmd.Env = r.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("--dry-run: %v\n%s", err, out)
	}
	for _, want := range []string{"table-" + r.run, "tbl.shop", "80/tcp", "http", "127.0.0.1:", "skipped: disabled"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("--dry-run output lacks %q:\n%s", want, out)
		}
	}
	if keys, _, _ := r.kv.KV().Keys(r.prefix+"/", "", nil); len(keys) != 0 {
		t.Errorf("--dry-run wrote %v", keys)
	}

	cmd = exec.Command(testenv.ExporterBinary(t), "--once")
	cmd.Env = r.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("--once: %v\n%s", err, out)
	}
	if d := r.doc(c); d == nil || d.Service != "tbl.shop" {
		t.Errorf("--once wrote %+v", d)
	}
}

// exitCode runs the binary to its end with env added to the test's, and
// returns its exit code and everything it printed.
func exitCode(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(testenv.ExporterBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("%v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// TestProcessExitCodes runs the binary for each way it ends without a
// signal: --version and --help succeed, a bad flag is a usage error (2), a
// --listen that cannot be bound and any fatal error at start are failures
// (1). None of these needs Consul: the node and advertise address are given,
// so nothing is asked of Docker or Consul before the failure.
func TestProcessExitCodes(t *testing.T) {
	t.Parallel()
	offline := []string{"BERTH_NODE=exit-codes", "BERTH_ADVERTISE_ADDR=192.0.2.10", "CONSUL_HTTP_ADDR=127.0.0.1:1"}

	code, out := exitCode(t, nil, "--version")
	if code != 0 || out != "berth-exporter "+Version+" "+runtime.Version()+"\n" {
		t.Errorf("--version: exit %d, %q", code, out)
	}

	code, out = exitCode(t, nil, "--help")
	if code != 0 {
		t.Errorf("--help: exit %d", code)
	}
	vars := 0
	for _, line := range strings.Split(out, "\n") {
		name, ok := strings.CutPrefix(line, "  --")
		if !ok {
			continue
		}
		name, _, _ = strings.Cut(name, " ")
		if name == "version" {
			continue
		}
		if env := "BERTH_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")); !strings.Contains(line, "("+env+")") {
			t.Errorf("--help does not name %s beside --%s: %q", env, name, line)
		}
		vars++
	}
	for _, env := range []string{"BERTH_NODE", "BERTH_ADVERTISE_ADDR", "BERTH_PREFIX", "BERTH_SESSION_TTL", "BERTH_RESYNC",
		"BERTH_EXPLICIT", "BERTH_LISTEN", "BERTH_LOG_LEVEL", "BERTH_LOG_FORMAT", "BERTH_DRY_RUN", "BERTH_ONCE",
		"BERTH_DEREGISTER_ON_EXIT", "BERTH_ONLY_LABEL", "CONSUL_HTTP_ADDR", "DOCKER_HOST"} {
		if !strings.Contains(out, env) {
			t.Errorf("--help does not name %s", env)
		}
	}
	if vars < 13 {
		t.Errorf("--help lists %d flags with variables:\n%s", vars, out)
	}

	for _, tc := range []struct {
		desc string
		env  []string
		args []string
		code int
		want string
	}{
		{"port out of range", offline, []string{"--listen", "127.0.0.1:99999"}, 2, "0 to 65535"},
		{"port out of range from the variable", append(offline, "BERTH_LISTEN=:99999"), nil, 2, "--listen"},
		{"unknown flag", nil, []string{"--no-such-flag"}, 2, "no-such-flag"},
		{"stray argument", nil, []string{"extra"}, 2, "unexpected arguments"},
		{"node name that sanitizes to nothing", append(offline, "BERTH_NODE=___"), nil, 1, "sanitizes to nothing"},
		{"no Docker to ask for the node name", []string{"BERTH_ADVERTISE_ADDR=192.0.2.10", "DOCKER_HOST=unix:///nonexistent/docker.sock"},
			nil, 1, "--node"},
	} {
		if code, out := exitCode(t, tc.env, tc.args...); code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d, want %d and output mentioning %q:\n%s", tc.desc, code, tc.code, tc.want, out)
		}
	}

	// A --listen address another socket holds.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if code, out := exitCode(t, offline, "--listen", ln.Addr().String()); code != 1 || !strings.Contains(out, "--listen") ||
		!strings.Contains(out, "address already in use") {
		t.Errorf("--listen %s, taken: exit %d, want 1 and the bind error:\n%s", ln.Addr(), code, out)
	}
}
