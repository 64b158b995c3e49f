package testenv

// T is what the real parts need of whoever starts them: *testing.T and
// *testing.B have it, and so does a program that is not a test (the
// benchmark driver's bench.TB), without pretending to be a testing.TB.
type T interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Failed() bool
	Logf(format string, args ...any)
	Name() string
	Skipf(format string, args ...any)
	TempDir() string
}
