// Package readbound cuts a response off at a byte bound while it is read,
// for the readers of Consul KV that must not hold what a hostile host chose
// to write (the plugin's per-host reads, berth's): one rule, so that both
// stop at the same byte.
package readbound

import (
	"errors"
	"io"
)

// ErrTooLarge ends a read past its bound.
var ErrTooLarge = errors.New("response larger than its bound")

// Read is one Read of r into p within a bound of limit bytes (0: none): n
// counts the bytes read so far, and exceeded is set once they pass limit.
// Nothing past the bound is handed over, so that a reader that buffers the
// whole value (json.Decoder) and gets the rest of the response in one read
// cannot complete the value the bound cut; after that every Read fails.
func Read(r io.Reader, p []byte, limit int64, n *int64, exceeded *bool) (int, error) {
	if *exceeded {
		return 0, ErrTooLarge
	}
	got, err := r.Read(p)
	*n += int64(got)
	if limit > 0 && *n > limit {
		*exceeded = true
		return max(0, got-int(*n-limit)), ErrTooLarge
	}
	return got, err
}
