package ctl

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
)

// The waits of this package's tests, from berth's own bounds: one read of
// Consul is cut off at consulTimeout (run.go), and an open page asks for
// what changed every pagePoll.

// pagePoll is the page's period of fetching what changed (ui.html's
// setTimeout(poll, 2000); TestPagePollIsNamed keeps the two equal).
const pagePoll = 2 * time.Second

// pageChangeWait is how long a change in KV may take to show in an open
// page: the UI's blocking read returns as soon as the index moves and its
// read is cut off at consulTimeout; the page asks within pagePoll, and the
// fragment it gets waits for nothing. Margin: one more poll, as the poll
// in flight may have asked just before the UI saw the change.
const pageChangeWait = consulTimeout + 2*pagePoll

// dumpDOMWait is how long chromium --dump-dom may take to print the page
// and exit: the browser's start (testenv.PartStartWait), then loading the
// page, one request to the UI, and its virtual-time budget, which headless
// Chromium fast-forwards rather than waits: one more start's worth.
const dumpDOMWait = 2 * testenv.PartStartWait

// TestPagePollIsNamed keeps pagePoll equal to the period in ui.html, which
// pageChangeWait is derived from.
func TestPagePollIsNamed(t *testing.T) {
	want := fmt.Sprintf("setTimeout(poll, %d)", pagePoll.Milliseconds())
	if n := strings.Count(uiHTML, want); n != 2 {
		t.Errorf("ui.html has %q %d times, want 2 (the first poll and each next one): pagePoll no longer matches the page", want, n)
	}
}
