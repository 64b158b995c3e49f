package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procStat is the fields of /proc/PID/stat after the command, which may
// hold spaces and parentheses: fields[0] is the state, fields[19] the start
// time. ok is false when there is no such process.
func procStat(pid int) (fields []string, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	s := string(b)
	fields = strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return fields, len(fields) >= 20
}

// Alive reports whether process pid exists and is not a zombie.
func Alive(pid int) bool {
	f, ok := procStat(pid)
	return ok && f[0] != "Z" && f[0] != "X"
}

// RSS is a process's resident set size in bytes, from /proc.
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// Proc is a process a test started in a process group of its own, so that
// the children it makes (Chromium's renderers and zygote, Podman's
// re-executed self) go with it: Kill ends the whole group and returns only
// once no member is left, so a directory they were writing can be removed
// right after. A test's t.TempDir is removed by a cleanup registered before
// the process starts, so the Kill that StartProcT registers runs first
// (cleanups run last registered, first run).
type Proc struct {
	Cmd  *exec.Cmd
	done chan struct{} // closed once Cmd.Wait returned
	err  error         // Cmd.Wait's result, once done is closed
}

// StartProc starts cmd as the leader of a new process group, killed by the
// kernel if this test process dies (Pdeathsig), and reaps it when it exits.
// cmd.SysProcAttr's credentials, if any, are kept.
func StartProc(cmd *exec.Cmd) (*Proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid, cmd.SysProcAttr.Pgid = true, 0
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// StartProcT is StartProc that fails t when cmd cannot start, and kills
// the group when t ends.
func StartProcT(t T, cmd *exec.Cmd) *Proc {
	t.Helper()
	p, err := StartProc(cmd)
	if err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	t.Cleanup(p.Kill)
	return p
}

// PID is the leader's process ID, which is also the group's.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Done is closed once the leader has exited (its children may live on).
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the leader has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the leader to exit, then ends what is left of its group
// (Kill), and returns the leader's exit error.
func (p *Proc) Wait() error {
	<-p.done
	p.Kill()
	return p.err
}

// Stop sends sig to the leader alone, for a process that ends its children
// itself (Podman forwards SIGTERM into its user namespace), waits up to
// grace for it to exit, and then kills what is left of the group.
func (p *Proc) Stop(sig syscall.Signal, grace time.Duration) {
	_ = p.Cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
	}
	p.Kill()
}

// Kill sends SIGKILL to every member of the group and to every descendant
// of the leader that left it, and returns once the leader is reaped and no
// member or such descendant is alive. It does not give up: SIGKILL cannot
// be caught, and only a process stuck in the kernel delays it, which the
// go test -timeout of the whole binary then reports.
func (p *Proc) Kill() {
	pgid := p.PID()
	known := map[int]string{} // pid -> start time: a reused pid is not ours
	for {
		members := groupAndDescendants(pgid, known)
		// Once the leader is gone and no member is left, the group's id
		// may be another's: a second Kill (Stop, then a cleanup) signals
		// nobody.
		if !p.Exited() || len(members) > 0 {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
		for pid := range members {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if p.Exited() && len(members) == 0 {
			return
		}
		select {
		case <-p.done:
		case <-time.After(procPoll):
		}
	}
}

// procPoll is how often Kill looks for members still alive: it only paces
// a loop that ends when the kernel has ended them, so it bounds nothing.
const procPoll = 10 * time.Millisecond

// groupAndDescendants is the live processes of group pgid and the live
// descendants of its leader, by /proc; known remembers each one's start
// time across calls, so that a descendant reparented to init after its
// parent died is still recognised, and a pid reused by another process is
// not.
func groupAndDescendants(pgid int, known map[int]string) map[int]bool {
	entries, _ := os.ReadDir("/proc")
	type proc struct {
		ppid, pgrp int
		start      string
	}
	all := map[int]proc{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, ok := procStat(pid)
		if !ok || f[0] == "Z" || f[0] == "X" {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		pgrp, _ := strconv.Atoi(f[2])
		all[pid] = proc{ppid, pgrp, f[19]}
	}
	live := map[int]bool{}
	for pid, pr := range all {
		if pr.pgrp == pgid || known[pid] == pr.start {
			live[pid] = true
		}
	}
	// Descendants of a member, by parent, until nothing is added.
	for grew := true; grew; {
		grew = false
		for pid, pr := range all {
			if !live[pid] && live[pr.ppid] {
				live[pid], grew = true, true
			}
		}
	}
	for pid := range live {
		known[pid] = all[pid].start
	}
	return live
}
