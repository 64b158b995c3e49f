package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// table writes aligned columns; every cell is made safe for a terminal
// first (see clean).
type table struct{ w *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{w: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		cells[i] = clean(c)
		if cells[i] == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.w, strings.Join(cells, "\t"))
}

func (t *table) flush() { t.w.Flush() }

// maxCell bounds one cell (room for a whole DNS name and its key): a document's free text (the exporter field, an
// error quoting a hostile value) must not flood the operator's terminal.
const maxCell = 512

// clean makes s safe to print: control characters (a terminal's escape
// sequences, tabs that would break the columns) and invalid UTF-8 become
// \x escapes, and a cell longer than maxCell is cut with "...". Documents
// are written by every host's exporter, so a hostile one could otherwise
// rewrite the operator's screen.
func clean(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		piece := s[i : i+n]
		if r == utf8.RuneError && n == 1 || unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) {
			piece = ""
			for _, c := range []byte(s[i : i+n]) {
				piece += fmt.Sprintf(`\x%02x`, c)
			}
		}
		if b.Len()+len(piece) > maxCell {
			return b.String() + "..."
		}
		b.WriteString(piece)
		i += n
	}
	return b.String()
}

// writeJSON writes v indented, for scripts (jq) and people alike, with
// every control and format character escaped (jsonSafe): encoding/json
// escapes C0 controls itself, but passes C1 controls (U+009B is a
// terminal's CSI) and bidi overrides (U+202E) through as they are.
func writeJSON(w io.Writer, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
	_, _ = w.Write(jsonSafe(buf.Bytes()))
}

// jsonSafe rewrites, in encoding/json's output, each character of Unicode's
// Cc (controls) and Cf (format: bidi overrides and isolates, zero-width
// characters) as \uXXXX escapes (a surrogate pair beyond the BMP). Those
// characters can only be inside strings there (JSON's own syntax is
// ASCII), where the escape means the same character: a decoder reads the
// same value, a terminal shows the escape.
func jsonSafe(b []byte) []byte {
	out := b[:0:0]
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r < utf8.RuneSelf || !(unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r)) {
			out = append(out, b[i:i+n]...)
			i += n
			continue
		}
		if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		} else {
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		i += n
	}
	return out
}
