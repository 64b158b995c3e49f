package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/moby/moby/client"
)

var exporterBinary = &goBinary{pkg: "./exporter/cmd/berth-exporter", name: "berth-exporter", env: "BERTH_EXPORTER"}

// ExporterBinary is a static berth-exporter: $BERTH_EXPORTER if set, else
// built from the working tree once per test binary (so that it is never
// older than the source).
func ExporterBinary(t T) string {
	t.Helper()
	return exporterBinary.path(t)
}

// ExporterImage is the tag of an image FROM scratch holding berth-exporter.
const ExporterImage = "berth-exporter:faults-test"

var exporterImage built

// EnsureExporterImage builds ExporterImage from ExporterBinary once per test
// binary.
func EnsureExporterImage(t T, cli *client.Client) string {
	t.Helper()
	bin := ExporterBinary(t)
	if _, err := exporterImage.get(func() (string, error) {
		return ExporterImage, BuildImage(cli, ExporterImage, map[string]string{"berth-exporter": bin},
			"FROM scratch\nCOPY berth-exporter /berth-exporter\nENTRYPOINT [\"/berth-exporter\"]\n")
	}); err != nil {
		t.Fatalf("exporter image: %v", err)
	}
	return ExporterImage
}

// ExporterProc is a berth-exporter process on the host. Its environment is
// the test's plus Env; it is killed when the test ends and its output is
// logged if the test failed.
type ExporterProc struct {
	t    T
	Args []string
	Env  []string

	mu   sync.Mutex
	proc *Proc // the current run; nil before the first
	out  LockedBuffer
	runs int
}

// StartExporter runs berth-exporter with args and env until the test ends.
func StartExporter(t T, env []string, args ...string) *ExporterProc {
	t.Helper()
	p := &ExporterProc{t: t, Args: args, Env: env}
	p.Start()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			out := p.Output()
			if len(out) > 20000 {
				out = "...\n" + out[len(out)-20000:]
			}
			t.Logf("berth-exporter %v output:\n%s", args, out)
		}
	})
	return p
}

// Start starts the process (again, after Kill or Signal).
func (p *ExporterProc) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc != nil && !p.proc.Exited() {
		p.t.Fatal("exporter already running")
	}
	p.runs++
	fmt.Fprintf(&p.out, "==== start %d ====\n", p.runs)
	cmd := exec.Command(ExporterBinary(p.t), p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	proc, err := StartProc(cmd)
	if err != nil {
		p.t.Fatal(err)
	}
	p.proc = proc
}

// Kill sends SIGKILL (a crash) and waits for the process to end.
func (p *ExporterProc) Kill() { p.Signal(syscall.SIGKILL) }

// Signal sends sig and waits up to ExporterExitWait for the process to
// end, then kills what is left of it.
func (p *ExporterProc) Signal(sig syscall.Signal) {
	p.mu.Lock()
	proc := p.proc
	p.mu.Unlock()
	if proc == nil {
		return
	}
	proc.Stop(sig, ExporterExitWait)
}

// Running reports whether the process is alive.
func (p *ExporterProc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proc != nil && !p.proc.Exited()
}

// PID is the current process's ID.
func (p *ExporterProc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proc.PID()
}

// Output is everything the process printed, over all its starts.
func (p *ExporterProc) Output() string { return p.out.String() }
