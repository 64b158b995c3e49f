package testenv

import (
	"os"
	"path/filepath"
	"sync"
)

// built is something a test binary makes once and shares between its tests
// (a binary, an image): its name or path, or the error making it.
type built struct {
	once sync.Once
	v    string
	err  error
}

// get makes the thing on the first call and returns it, or its error, on
// every call.
func (b *built) get(make func() (string, error)) (string, error) {
	b.once.Do(func() { b.v, b.err = make() })
	return b.v, b.err
}

// goBinary is one of the module's commands, built once per test binary,
// statically, into a folder of its own: env names the variable that points
// at a build to use instead (make test sets it for bin/coredns).
type goBinary struct {
	pkg, name, env string
	b              built
}

func (g *goBinary) path(t T) string {
	t.Helper()
	if p := os.Getenv(g.env); p != "" {
		return p
	}
	p, err := g.b.get(func() (string, error) {
		dir, err := os.MkdirTemp("", "berth-"+g.name+"-")
		if err != nil {
			return "", err
		}
		out := filepath.Join(dir, g.name)
		return out, BuildStatic(RepoRoot(t), g.pkg, out)
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
