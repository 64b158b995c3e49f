package testenv

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// Podman is a Podman API service started for one test: its
// Docker-compatible socket, a moby client on it, and the user it runs as.
type Podman struct {
	Socket string // path of the unix socket
	Host   string // DOCKER_HOST for it: unix://<Socket>
	Client *client.Client
	// Rootless: the service runs as an unprivileged user, whose UID and
	// environment (HOME, XDG_RUNTIME_DIR) its podman commands need.
	Rootless bool
	UID, GID int
	Env      []string // extra environment of podman commands
}

// StartPodman runs `podman system service` as root on a socket in a
// directory of its own until the test ends (never /run/podman, which may
// belong to the machine), or skips/fails through Unavailable when podman is
// missing.
//
// Containers get nofile and nproc ulimits from a containers.conf written
// here: Podman's defaults are above what this machine lets a process raise
// to, and the runtime then refuses to start any container.
func StartPodman(t testing.TB) *Podman {
	t.Helper()
	bin, err := exec.LookPath("podman")
	if err != nil {
		Unavailable(t, "podman not installed (hack/deps.sh installs it): %v", err)
	}
	dir, err := os.MkdirTemp("", "berth-podman-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &Podman{Socket: filepath.Join(dir, "podman.sock")}
	p.Host = "unix://" + p.Socket
	p.start(t, bin, dir, nil)
	return p
}

// start writes the containers.conf, runs the service with attr's
// credentials (nil: this process's), waits for its socket and connects.
func (p *Podman) start(t testing.TB, bin, dir string, cred *syscall.Credential) {
	t.Helper()
	nofile, nproc, err := podmanLimits(bin, cred, p.Env)
	if err != nil {
		Unavailable(t, "podman's process limits: %v", err)
	}
	conf := filepath.Join(dir, "containers.conf")
	body := fmt.Sprintf("[containers]\ndefault_ulimits = [\"nofile=%d:%d\", \"nproc=%d:%d\"]\n", nofile, nofile, nproc, nproc)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	p.Env = append(p.Env, "CONTAINERS_CONF="+conf)
	cmd := exec.Command(bin, "system", "service", "--time=0", p.Host)
	cmd.Env = append(os.Environ(), p.Env...)
	var out LockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
	if err := cmd.Start(); err != nil {
		Unavailable(t, "podman system service: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	cli, err := client.New(client.WithHost(p.Host))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
		cancel()
		if err == nil {
			break
		}
		select {
		case <-done:
			Unavailable(t, "podman system service exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("podman service on %s not answering: %v\n%s", p.Socket, err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.Client = cli
	reapPodmanOrphans(cli)
}

// Command is a podman command against the same storage as the service
// (as the same user), e.g. `podman healthcheck run <id>`, which tests run
// themselves: there is no systemd here to time health checks.
func (p *Podman) Command(args ...string) *exec.Cmd {
	cmd := exec.Command("podman", args...)
	cmd.Env = append(os.Environ(), p.Env...)
	if p.Rootless {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(p.UID), Gid: uint32(p.GID)}}
	}
	return cmd
}

var (
	podmanLimitsOnce         sync.Map // cred key -> *podmanLimitResult
	podmanImageOnce          sync.Map // socket's user -> *podmanImageResult
	podmanReapOnce           sync.Once
	errPodmanLimitsNoService = fmt.Errorf("the probe service did not start")
)

type podmanLimitResult struct {
	once          sync.Once
	nofile, nproc uint64
	err           error
}

// podmanLimits are the nofile and nproc limits a container may have: the
// hard limits of a running podman process, which lowers its own nproc at
// start (to 32768 here, under the machine's 96364) and cannot raise any
// without CAP_SYS_RESOURCE. They are read once per user from a probe
// service's /proc/<pid>/limits.
func podmanLimits(bin string, cred *syscall.Credential, env []string) (uint64, uint64, error) {
	key := "root"
	if cred != nil {
		key = strconv.Itoa(int(cred.Uid))
	}
	v, _ := podmanLimitsOnce.LoadOrStore(key, &podmanLimitResult{})
	r := v.(*podmanLimitResult)
	r.once.Do(func() { r.nofile, r.nproc, r.err = probePodmanLimits(bin, cred, env) })
	return r.nofile, r.nproc, r.err
}

func probePodmanLimits(bin string, cred *syscall.Credential, env []string) (uint64, uint64, error) {
	dir, err := os.MkdirTemp("", "berth-podman-probe-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return 0, 0, err
		}
	}
	sock := filepath.Join(dir, "probe.sock")
	cmd := exec.Command(bin, "system", "service", "--time=0", "unix://"+sock)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// The limits are set before the socket is created.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, errPodmanLimitsNoService
		}
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/limits", cmd.Process.Pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var nofile, nproc uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		var dst *uint64
		switch {
		case strings.HasPrefix(line, "Max open files"):
			dst = &nofile
		case strings.HasPrefix(line, "Max processes"):
			dst = &nproc
		default:
			continue
		}
		// "Max processes  32768  32768  processes": the hard limit is the
		// second number; "unlimited" leaves the podman default in place.
		if len(fields) >= 4 {
			if n, err := strconv.ParseUint(fields[len(fields)-2], 10, 64); err == nil {
				*dst = n
			} else if fields[len(fields)-2] == "unlimited" {
				*dst = 1048576
			}
		}
	}
	if nofile == 0 || nproc == 0 {
		return 0, 0, fmt.Errorf("no nofile/nproc limits in /proc/%d/limits", cmd.Process.Pid)
	}
	return nofile, nproc, sc.Err()
}

type podmanImageResult struct {
	once sync.Once
	err  error
}

// EnsurePodmanTestServiceImage builds TestServiceImage into p's storage
// (root's, or the rootless user's) once per test binary, through the API's
// Docker-compatible /build endpoint as EnsureTestServiceImage does for
// Docker. Podman stores it as localhost/berth-testsvc:test, which the
// short name finds.
func EnsurePodmanTestServiceImage(t testing.TB, p *Podman) string {
	t.Helper()
	key := "root"
	if p.Rootless {
		key = strconv.Itoa(p.UID)
	}
	v, _ := podmanImageOnce.LoadOrStore(key, &podmanImageResult{})
	r := v.(*podmanImageResult)
	r.once.Do(func() {
		bin := filepath.Join(os.TempDir(), fmt.Sprintf("berth-testsvc-podman-%d", os.Getpid()))
		defer os.Remove(bin)
		if r.err = BuildStatic(RepoRoot(t), "./internal/testenv/testsvc", bin); r.err != nil {
			return
		}
		r.err = BuildImage(p.Client, TestServiceImage, map[string]string{"testsvc": bin},
			"FROM scratch\nCOPY testsvc /testsvc\nEXPOSE 80\nENTRYPOINT [\"/testsvc\"]\n")
	})
	if r.err != nil {
		t.Fatalf("test service image on podman: %v", r.err)
	}
	return TestServiceImage
}

// reapPodmanOrphans is reapOrphans for root's Podman storage, whose
// containers the Docker engine's listing does not see.
func reapPodmanOrphans(cli *client.Client) {
	podmanReapOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ctrs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true,
			Filters: client.Filters{}.Add("label", OwnerLabel)})
		if err != nil {
			fmt.Fprintf(os.Stderr, "testenv: listing leftover podman containers: %v\n", err)
			return
		}
		for _, c := range ctrs.Items {
			if orphaned(c.Labels) {
				fmt.Fprintf(os.Stderr, "testenv: removing podman container %s left by %s\n", c.ID[:12], c.Labels[OwnerLabel])
				_, _ = cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			}
		}
	})
}
