package bench

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"sync"

	"github.com/berthdns/berth/internal/testenv"
)

// TB lets the benchmark driver, which is a program and not a test, use the
// real parts that internal/testenv starts (Consul, CoreDNS, Docker images):
// it is a testenv.T for one section of the run. A Fatal or Skip
// panics with a Failure, which Section turns into the section's error after
// running the cleanups, so a failing section never leaves a process or a
// container behind and never stops the other sections.
type TB struct {
	name string
	ctx  context.Context

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	skipped  bool
}

// Failure is what a section's Fatal or Skip panics with.
type Failure struct {
	Msg     string
	Skipped bool
}

func (f Failure) Error() string { return f.Msg }

// Section runs f as one named part of the run, with its own cleanups.
func Section(name string, f func(t *TB)) (err error) {
	ctx, cancel := context.WithCancel(context.Background())
	t := &TB{name: name, ctx: ctx}
	defer func() {
		if r := recover(); r != nil {
			if fl, ok := r.(Failure); ok {
				err = fl
			} else {
				err = fmt.Errorf("panic: %v", r)
			}
		}
		cancel()
		t.runCleanups()
		if err == nil && t.Failed() {
			err = fmt.Errorf("%s: failed", name)
		}
	}()
	f(t)
	return nil
}

func (t *TB) runCleanups() {
	for {
		t.mu.Lock()
		if len(t.cleanups) == 0 {
			t.mu.Unlock()
			return
		}
		fn := t.cleanups[len(t.cleanups)-1]
		t.cleanups = t.cleanups[:len(t.cleanups)-1]
		t.mu.Unlock()
		func() {
			defer func() {
				if r := recover(); r != nil {
					log.Printf("%s: cleanup: %v", t.name, r)
				}
			}()
			fn()
		}()
	}
}

func (t *TB) ArtifactDir() string    { return t.TempDir() }
func (t *TB) Attr(key, value string) {}
func (t *TB) Cleanup(f func()) {
	t.mu.Lock()
	t.cleanups = append(t.cleanups, f)
	t.mu.Unlock()
}
func (t *TB) Error(args ...any) { t.Log(args...); t.Fail() }
func (t *TB) Errorf(format string, args ...any) {
	t.Logf(format, args...)
	t.Fail()
}
func (t *TB) Fail() {
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
}
func (t *TB) FailNow() { t.Fail(); panic(Failure{Msg: t.name + ": failed"}) }
func (t *TB) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}
func (t *TB) Fatal(args ...any) {
	t.Fail()
	panic(Failure{Msg: t.name + ": " + fmt.Sprint(args...)})
}
func (t *TB) Fatalf(format string, args ...any) {
	t.Fail()
	panic(Failure{Msg: t.name + ": " + fmt.Sprintf(format, args...)})
}
func (t *TB) Helper()         {}
func (t *TB) Log(args ...any) { log.Print(append([]any{t.name + ": "}, args...)...) }
func (t *TB) Logf(f string, args ...any) {
	log.Printf(t.name+": "+f, args...)
}
func (t *TB) Name() string { return t.name }
func (t *TB) Setenv(key, value string) {
	old, had := os.LookupEnv(key)
	os.Setenv(key, value)
	t.Cleanup(func() {
		if had {
			os.Setenv(key, old)
		} else {
			os.Unsetenv(key)
		}
	})
}
func (t *TB) Chdir(dir string) { t.Fatalf("Chdir is not supported by the benchmark driver") }
func (t *TB) Skip(args ...any) {
	t.mu.Lock()
	t.skipped = true
	t.mu.Unlock()
	panic(Failure{Msg: t.name + ": skipped: " + fmt.Sprint(args...), Skipped: true})
}
func (t *TB) SkipNow() { t.Skip() }
func (t *TB) Skipf(format string, args ...any) {
	t.Skip(fmt.Sprintf(format, args...))
}
func (t *TB) Skipped() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.skipped
}
func (t *TB) TempDir() string {
	dir, err := os.MkdirTemp("", "berthbench-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
func (t *TB) Context() context.Context { return t.ctx }
func (t *TB) Output() io.Writer        { return os.Stderr }

// Check fails the section on a non-nil error.
func (t *TB) Check(err error, what string) {
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TB is what internal/testenv needs of its caller.
var _ testenv.T = (*TB)(nil)
