package exporter

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// binary builds cmd/berth-exporter once per test binary.
func binary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-exporter-test-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "berth-exporter")
		binErr = testenv.BuildStatic(testenv.RepoRoot(t), "./exporter/cmd/berth-exporter", binPath)
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// proc is a berth-exporter subprocess.
type proc struct {
	cmd  *exec.Cmd
	out  testenv.LockedBuffer
	done chan struct{}
}

// args are the flags every subprocess gets: this rig's host, address and
// containers, configured through the environment as the image would be.
func (r *rig) env() []string {
	return append(os.Environ(),
		"CONSUL_HTTP_ADDR="+r.consul.HTTP,
		"BERTH_NODE="+r.host,
		"BERTH_ADVERTISE_ADDR=127.0.0.1",
		"BERTH_ONLY_LABEL=berth.test.run="+r.run,
		"BERTH_LISTEN=127.0.0.1:0",
		"BERTH_LOG_LEVEL=debug",
	)
}

func (r *rig) startProc(args ...string) *proc {
	r.t.Helper()
	p := &proc{cmd: exec.Command(binary(r.t), args...), done: make(chan struct{})}
	p.cmd.Env = r.env()
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	r.t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if r.t.Failed() {
			r.t.Logf("exporter %v output:\n%s", args, p.out.String())
		}
	})
	return p
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("exporter did not exit after %v", sig)
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
	r := newRig(t, testenv.ConsulOptions{})
	c1 := r.runContainer(runOpts{name: "steady"})
	a := r.startProc()
	r.waitDoc("published by the first exporter", c1, 10*time.Second, present)
	hostKey := record.HostKey(r.prefix, r.host)
	session := r.holder(hostKey)
	if session == "" {
		t.Fatal("host document has no session")
	}

	a.signal(t, syscall.SIGKILL)
	b := r.startProc()
	c2 := r.runContainer(runOpts{name: "later"})
	ttl := DefaultConfig().SessionTTL
	watchUntil := time.Now().Add(2*ttl + 2*time.Second)
	checks := 0
	for time.Now().Before(watchUntil) {
		if d := r.doc(c1); d == nil {
			t.Fatalf("gap: the document of a running container vanished %s after the restart", time.Until(watchUntil))
		}
		if h := r.holder(hostKey); h == "" {
			t.Fatal("gap: the host document vanished after the restart")
		}
		checks++
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("no gap over %d checks in %s", checks, 2*ttl+2*time.Second)
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
	r.waitDoc("expired after SIGKILL", c1, 2*ttl+5*time.Second, absent)
	r.waitDoc("expired after SIGKILL", c2, time.Second, absent)
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
// adopted by the next start), and --deregister-on-exit removes them.
func TestProcessSigterm(t *testing.T) {
	t.Parallel()
	r := newRig(t, testenv.ConsulOptions{})
	c := r.runContainer(runOpts{name: "svc"})

	p := r.startProc()
	r.waitDoc("published", c, 10*time.Second, present)
	p.signal(t, syscall.SIGTERM)
	if p.cmd.ProcessState.ExitCode() != 0 {
		t.Errorf("exit code %d after SIGTERM", p.cmd.ProcessState.ExitCode())
	}
	if r.doc(c) == nil {
		t.Fatal("records removed on SIGTERM without --deregister-on-exit")
	}

	p = r.startProc("--deregister-on-exit")
	time.Sleep(time.Second) // let it adopt and reconcile
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

	cmd := exec.Command(binary(t), "--dry-run")
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

	cmd = exec.Command(binary(t), "--once")
	cmd.Env = r.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("--once: %v\n%s", err, out)
	}
	if d := r.doc(c); d == nil || d.Service != "tbl.shop" {
		t.Errorf("--once wrote %+v", d)
	}
}
