package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// writerScript starts a child that keeps writing into the folder $1, in
// the leader's process group, and has the leader exit at once: what a
// browser does whose renderer still writes its profile after the browser
// printed the page.
const writerScript = `(while :; do mkdir -p "$1/Default"; echo x > "$1/Default/f.$$"; done) & exit 0`

// TestProcWaitEndsTheGroup: after Wait, no member of the group is left,
// so the folder the child was writing can be removed, and stays empty. The
// folder is t.TempDir's, whose removal (registered first, so run last)
// fails the test with "directory not empty" when a writer outlives the
// leader, as TestUIChromium failed before its browser ran through Proc.
func TestProcWaitEndsTheGroup(t *testing.T) {
	dir := t.TempDir()
	p := StartProcT(t, exec.Command("sh", "-c", writerScript, "sh", dir))
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := len(groupAndDescendants(p.PID(), map[int]string{})); n != 0 {
		t.Errorf("%d members of the group alive after Wait", n)
	}
	if err := os.RemoveAll(filepath.Join(dir, "Default")); err != nil {
		t.Fatalf("removing what the group wrote: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "Default")); !os.IsNotExist(err) {
		t.Errorf("the folder came back after Wait: %v", err)
	}
}

// TestProcKillEndsDescendants: Kill of a running leader ends its children
// too, also one that moved to a process group of its own.
func TestProcKillEndsDescendants(t *testing.T) {
	dir := t.TempDir()
	script := `sh -c 'while :; do echo x > "$1/g"; done' sh "$1" &
setsid sh -c 'while :; do echo x > "$1/s"; done' sh "$1" &
while [ ! -e "$1/g" ] || [ ! -e "$1/s" ]; do :; done
echo started; wait`
	cmd := exec.Command("sh", "-c", script, "sh", dir)
	out := &LockedBuffer{}
	cmd.Stdout = out
	p := StartProcT(t, cmd)
	EventuallyTrue(t, PartStartWait, "both writers running", func() bool { return out.String() == "started\n" })
	p.Kill()
	for _, f := range []string{"g", "s"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(groupAndDescendants(p.PID(), map[int]string{})); n != 0 {
		t.Errorf("%d members of the group alive after Kill", n)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("written after Kill: %v", entries)
	}
}
