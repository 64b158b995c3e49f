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
func StartPodman(t T) *Podman {
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
func (p *Podman) start(t T, bin, dir string, cred *syscall.Credential) {
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
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	proc, err := StartProc(cmd)
	if err != nil {
		Unavailable(t, "podman system service: %v", err)
	}
	// SIGTERM first, which podman forwards into a rootless user namespace;
	// then the group, and the test's folders after that.
	t.Cleanup(func() { proc.Stop(syscall.SIGTERM, PodmanExitWait) })
	cli, err := client.New(client.WithHost(p.Host))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	deadline := time.Now().Add(PartStartWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), PartStartWait)
		_, err = cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
		cancel()
		if err == nil {
			break
		}
		if proc.Exited() {
			Unavailable(t, "podman system service exited: %s", out.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("podman service on %s not answering within %v: %v\n%s", p.Socket, PartStartWait, err, out.String())
		}
		time.Sleep(PollInterval)
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
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	proc, err := StartProc(cmd)
	if err != nil {
		return 0, 0, err
	}
	// SIGTERM, which podman forwards: a rootless podman re-executes itself
	// inside the user namespace; then the group, before dir is removed.
	defer proc.Stop(syscall.SIGTERM, PodmanExitWait)
	// The limits are set before the socket is created.
	for deadline := time.Now().Add(PartStartWait); ; time.Sleep(PollInterval) {
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
func EnsurePodmanTestServiceImage(t T, p *Podman) string {
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

// RootlessUser is the unprivileged user StartRootlessPodman runs Podman as,
// created (with a subordinate ID range) on first use.
const RootlessUser = "berth-rootless"

// StartRootlessPodman runs `podman system service` as RootlessUser on that
// user's standard socket, $XDG_RUNTIME_DIR/podman/podman.sock, until the
// test ends. It needs root (to create the user and its runtime directory),
// user namespaces open to unprivileged users, newuidmap and slirp4netns,
// and a /dev/net/tun the user may open (slirp4netns, the network of every
// rootless container, opens it as the user). What is missing is named: a
// missing tool through Unavailable, a machine that forbids the rest by a
// skip.
func StartRootlessPodman(t T) *Podman {
	t.Helper()
	bin, err := exec.LookPath("podman")
	if err != nil {
		Unavailable(t, "podman not installed (hack/deps.sh installs it): %v", err)
	}
	for _, tool := range []string{"newuidmap", "newgidmap", "slirp4netns"} {
		if _, err := exec.LookPath(tool); err != nil {
			Unavailable(t, "rootless podman needs %s (hack/deps.sh installs it): %v", tool, err)
		}
	}
	if reason := rootlessForbidden(); reason != "" {
		t.Skipf("rootless podman cannot run on this machine: %s", reason)
	}
	uid, gid, home, err := rootlessUser()
	if err != nil {
		t.Skipf("rootless podman: no user to run it as: %v", err)
	}
	runtime := fmt.Sprintf("/run/user/%d", uid)
	for _, d := range []string{runtime, filepath.Join(runtime, "podman")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp(home, "service-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	p := &Podman{Socket: filepath.Join(runtime, "podman", "podman.sock"), Rootless: true, UID: uid, GID: gid,
		Env: []string{"HOME=" + home, "XDG_RUNTIME_DIR=" + runtime, "USER=" + RootlessUser}}
	p.Host = "unix://" + p.Socket
	rootlessMu.Lock() // one service on the user's one socket at a time
	t.Cleanup(rootlessMu.Unlock)
	// Rootless podman leaves a pause process holding the user's namespace
	// behind when the service ends; it belongs to the test as well. (This
	// cleanup runs after the service's, registered below.)
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(runtime, "libpod", "tmp", "pause.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	p.start(t, bin, dir, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)})
	return p
}

var rootlessMu sync.Mutex

// rootlessForbidden says why this machine cannot run rootless containers,
// or "" when it can as far as can be seen without trying.
func rootlessForbidden() string {
	if b, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(b)) != "1" {
		return "kernel.unprivileged_userns_clone is " + strings.TrimSpace(string(b)) + ": unprivileged users may not create user namespaces"
	}
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(b)) == "0" {
		return "user.max_user_namespaces is 0: no user namespaces"
	}
	if os.Geteuid() != 0 {
		return "the test is not root, and creating the user and its /run/user directory takes root"
	}
	st, err := os.Stat("/dev/net/tun")
	if err != nil {
		return "no /dev/net/tun, which slirp4netns needs: " + err.Error()
	}
	if st.Mode().Perm()&0o006 != 0o006 {
		return fmt.Sprintf("/dev/net/tun is mode %04o, so slirp4netns (the network of rootless containers) cannot open it as an unprivileged user", st.Mode().Perm())
	}
	return ""
}

// rootlessUser creates RootlessUser, a system user with a home directory
// and a subordinate ID range for its user namespace, unless it exists.
func rootlessUser() (uid, gid int, home string, err error) {
	lookup := func() error {
		out, err := exec.Command("getent", "passwd", RootlessUser).Output()
		if err != nil {
			return err
		}
		f := strings.Split(strings.TrimSpace(string(out)), ":")
		if len(f) < 6 {
			return fmt.Errorf("getent passwd %s: %q", RootlessUser, out)
		}
		uid, _ = strconv.Atoi(f[2])
		gid, _ = strconv.Atoi(f[3])
		home = f[5]
		return nil
	}
	if lookup() != nil {
		if out, err := exec.Command("useradd", "--system", "--create-home", "--home-dir", "/var/lib/"+RootlessUser,
			"--shell", "/usr/sbin/nologin", RootlessUser).CombinedOutput(); err != nil {
			return 0, 0, "", fmt.Errorf("useradd: %v: %s", err, out)
		}
		if err := lookup(); err != nil {
			return 0, 0, "", err
		}
	}
	// A system user gets no subordinate IDs from useradd.
	if b, _ := os.ReadFile("/etc/subuid"); !strings.Contains(string(b), RootlessUser+":") {
		if out, err := exec.Command("usermod", "--add-subuids", "200000-265535", "--add-subgids", "200000-265535",
			RootlessUser).CombinedOutput(); err != nil {
			return 0, 0, "", fmt.Errorf("usermod: %v: %s", err, out)
		}
	}
	return uid, gid, home, nil
}
