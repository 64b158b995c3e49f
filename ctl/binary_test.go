package ctl

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/berthdns/berth/internal/testenv"
)

// buildBerth builds bin/berth's command into a temporary directory.
func buildBerth(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "berth")
	cmd := exec.Command("go", "build", "-o", bin, "./ctl/cmd/berth")
	cmd.Dir = testenv.RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./ctl/cmd/berth: %v\n%s", err, out)
	}
	return bin
}

// The built binary: its exit statuses are the process's, its output the
// in-process command's; berth ui serves until SIGTERM and exits 0.
func TestBinary(t *testing.T) {
	startFixture(t)
	bin := buildBerth(t)
	exec1 := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
	}
	for _, args := range [][]string{{"check"}, {"ls", "-o", "json"}, {"hosts"}, {"policy", "h1"}, {"check", "--prefix", ""}} {
		code, out, errOut := exec1(args...)
		wcode, wout, werr := run(args...)
		if code != wcode || out != wout || errOut != werr {
			t.Errorf("berth %v: the binary gave %d %q %q, in-process %d %q %q", args, code, out, errOut, wcode, wout, werr)
		}
	}
	if code, out, _ := exec1("--version"); code != 0 || out != "berth "+Version+" "+runtime.Version()+"\n" {
		t.Errorf("--version: %d %q", code, out)
	}
	code, out, _ := exec1("--help")
	if code != 0 {
		t.Errorf("--help: exit %d", code)
	}
	for _, v := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "BERTH_PREFIX", "BERTH_ZONE"} {
		if !strings.Contains(out, v) {
			t.Errorf("--help does not name %s", v)
		}
	}
	if code, _, _ := exec1("ls", "--bogus"); code != 2 {
		t.Errorf("a bad flag: exit %d, want 2", code)
	}

	// berth ui: its first line names the address it listens on.
	cmd := exec.Command(bin, "ui", "--listen", "127.0.0.1:0")
	stdout, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdout.Close() })
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	ui := testenv.StartProcT(t, cmd)
	w.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	url := regexp.MustCompile(`http://127\.0\.0\.1:\d+/`).FindString(line)
	if url == "" {
		t.Fatalf("berth ui said %q", line)
	}
	testenv.Eventually(t, consulTimeout, "berth ui shows host1", func() error {
		var v View
		if err := getJSON(url+"namespace.json", &v); err != nil {
			return err
		}
		if len(v.Hosts) != 2 || v.Hosts[0].Name != "host1" || v.Hosts[0].SessionState != SessionLive {
			return fmt.Errorf("hosts %+v", v.Hosts)
		}
		return nil
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, stdout)
	if err := ui.Wait(); err != nil {
		t.Errorf("berth ui after SIGTERM: %v", err)
	}
}
