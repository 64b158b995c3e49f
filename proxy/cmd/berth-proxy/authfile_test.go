package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An auth file others may read, or with an empty password, is refused with
// a message that names the file and the fix.
func TestAuthFileChecks(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "# users\nalice:s3cret\n\nbob:hunter2\n", 0o600)
	users, err := readUsers(good)
	if err != nil || len(users) != 2 || users["alice"] != "s3cret" || users["bob"] != "hunter2" {
		t.Errorf("readUsers(mode 0600) = %v, %v", users, err)
	}
	for _, tc := range []struct {
		name    string
		content string
		mode    os.FileMode
		says    []string
	}{
		{"world", "alice:s3cret\n", 0o644, []string{"mode 0644", "chmod 600"}},
		{"group", "alice:s3cret\n", 0o640, []string{"mode 0640", "chmod 600"}},
		{"empty-password", "alice:s3cret\nbob:\n", 0o600, []string{":2:", `"bob" has an empty password`}},
		{"no-colon", "alice\n", 0o600, []string{":1:", "want user:password"}},
		{"no-users", "# nobody\n", 0o600, []string{"no users"}},
	} {
		p := write(tc.name, tc.content, tc.mode)
		_, err := readUsers(p)
		for _, want := range append(tc.says, p) {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %v, want one containing %q", tc.name, err, want)
			}
		}
	}
	// Through the command line: exit 2 before listening.
	world := write("world2", "alice:s3cret\n", 0o644)
	code, out := runBinary(t, nil, "--zones", "c.test", "--socks", "", "--http", "127.0.0.1:0", "--auth-file", world)
	if code != 2 || !strings.Contains(out, "chmod 600 "+world) || strings.Contains(out, "listening") {
		t.Errorf("world-readable --auth-file: exit %d, %q; want exit 2 naming the fix", code, out)
	}
}
