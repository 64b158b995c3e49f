package ctl

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// clean escapes what a terminal would act on and bounds a cell, never
// cutting a character in two.
func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"web-1":             "web-1",
		"a\x1b[2Jb":         `a\x1b[2Jb`,
		"tab\there\nnl":     `tab\x09here\x0anl`,
		"rtl\u202eevil":     `rtl\xe2\x80\xaeevil`,
		"bad\xffutf8":       `bad\xffutf8`,
		"ünïcode is fine ✓": "ünïcode is fine ✓",
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
	long := clean("x" + strings.Repeat("é", maxCell))
	if !strings.HasSuffix(long, "...") || len(long) > maxCell+3 || !utf8.ValidString(long) {
		t.Errorf("a long cell: %d bytes, valid UTF-8 %v, ends %q", len(long), utf8.ValidString(long), long[len(long)-5:])
	}
}
