package ctl

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// HostInfo is one host, as `berth hosts -o json` gives it.
type HostInfo struct {
	Name       string   `json:"name"`
	Addrs      []string `json:"addrs"`
	Containers int      `json:"containers"`
	Exporter   string   `json:"exporter"` // the host document's exporter version
	// Session is the ID of the session holding the host's key; SessionState
	// is "live" (Consul knows it), "gone" (it does not: the key outlived
	// it) or "none" (no session holds the key, so nothing removes the
	// host's records if its exporter dies); "unknown" when the token may
	// not read sessions.
	Session      string `json:"session"`
	SessionState string `json:"session_state"`
	Rev          uint64 `json:"rev"`   // the document's rev, which its exporter bumps
	Index        uint64 `json:"index"` // the document's ModifyIndex in Consul
	// Layout is the KV layouts the host is in: "1", "2" or "both"
	// (Host.Layout); a migration to layout 2 is done when every host says 2.
	Layout string `json:"layout"`
}

// Session states.
const (
	SessionLive    = "live"
	SessionGone    = "gone"
	SessionNone    = "none"
	SessionUnknown = "unknown"
)

// HostInfos lists ns's hosts by name (Sessions must have run).
func HostInfos(ns *Namespace) []HostInfo {
	out := make([]HostInfo, 0, len(ns.Hosts))
	for _, h := range ns.Hosts {
		hi := HostInfo{Name: h.Doc.Name, Containers: len(h.Containers), Exporter: h.Doc.Exporter,
			Session: h.Session, SessionState: SessionNone, Rev: h.Doc.Rev, Index: h.Index, Layout: string(h.Layout)}
		for _, a := range h.Doc.Addrs {
			hi.Addrs = append(hi.Addrs, a.String())
		}
		switch {
		case h.SessionDenied:
			hi.SessionState = SessionUnknown
		case h.Session != "" && h.SessionLive:
			hi.SessionState = SessionLive
		case h.Session != "":
			hi.SessionState = SessionGone
		}
		out = append(out, hi)
	}
	return out
}

// runHosts prints the hosts.
func runHosts(ns *Namespace, o *options, stdout, stderr io.Writer) int {
	if len(o.args) > 0 {
		fmt.Fprintln(stderr, "berth hosts: no arguments")
		return 2
	}
	hosts := HostInfos(ns)
	if o.output == "json" {
		writeJSON(stdout, hosts)
	} else {
		t := newTable(stdout, "HOST", "ADDRS", "CONTAINERS", "EXPORTER", "SESSION", "REV", "INDEX", "LAYOUT")
		for _, h := range hosts {
			session := h.SessionState
			if h.Session != "" {
				session += " " + shortID(h.Session)
			}
			t.row(h.Name, strings.Join(h.Addrs, ","), strconv.Itoa(h.Containers), h.Exporter, session,
				strconv.FormatUint(h.Rev, 10), strconv.FormatUint(h.Index, 10), h.Layout)
		}
		t.flush()
	}
	warnProblems(ns, stderr)
	return 0
}

// shortID is a session ID's first group, as Consul's UI shows it.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
