package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode"
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

// writeJSON writes v indented, for scripts (jq) and people alike. JSON
// escapes control characters itself.
func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
