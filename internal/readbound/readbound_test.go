package readbound

import (
	"errors"
	"strings"
	"testing"
)

// A read that passes the bound hands over the bytes up to it and no more,
// then fails with ErrTooLarge on every later read; a read within the bound
// is untouched, and 0 means no bound.
func TestRead(t *testing.T) {
	r := strings.NewReader(strings.Repeat("x", 100))
	var n int64
	var exceeded bool
	p := make([]byte, 64)
	if got, err := Read(r, p, 80, &n, &exceeded); got != 64 || err != nil || exceeded {
		t.Fatalf("first read: %d %v exceeded=%v, want 64 bytes", got, err, exceeded)
	}
	if got, err := Read(r, p, 80, &n, &exceeded); got != 16 || !errors.Is(err, ErrTooLarge) || !exceeded || n != 100 {
		t.Fatalf("second read: %d %v exceeded=%v n=%d, want the 16 bytes up to the bound and ErrTooLarge", got, err, exceeded, n)
	}
	if got, err := Read(strings.NewReader("more"), p, 80, &n, &exceeded); got != 0 || !errors.Is(err, ErrTooLarge) {
		t.Fatalf("after the bound: %d %v, want ErrTooLarge", got, err)
	}
	n, exceeded = 0, false
	if got, err := Read(strings.NewReader(strings.Repeat("y", 50)), p, 0, &n, &exceeded); got != 50 || err != nil || exceeded {
		t.Fatalf("no bound: %d %v exceeded=%v", got, err, exceeded)
	}
}
