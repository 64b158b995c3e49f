package exporter

import (
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/moby/moby/api/types/container"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthdns/berth/record"
)

// Container labels the exporter reads.
const (
	LabelService  = "berth.service"  // service name, dots allowed
	LabelEnable   = "berth.enable"   // "false" opts out; "true" opts in under --explicit
	LabelPriority = "berth.priority" // SRV priority, 0-65535
	LabelWeight   = "berth.weight"   // SRV weight, 0-65535
	LabelAlias    = "berth.alias"    // extra names of the service, comma-separated
	// LabelPortPrefix starts berth.port.<P>.name, the name of container port P.
	LabelPortPrefix = "berth.port."

	LabelComposeService = "com.docker.compose.service"
	LabelComposeProject = "com.docker.compose.project"
)

// Values of --compat: which other tool's container metadata the exporter
// also honours.
const (
	CompatNone        = ""
	CompatRegistrator = "registrator" // SERVICE_* labels and environment variables
)

// registratorPrefix starts every key registrator reads, as a label or an
// environment variable: SERVICE_<KEY> for the container, SERVICE_<P>_<KEY>
// for its container port P (exporter/README.md#registrator-compatibility).
const registratorPrefix = "SERVICE_"

// Reasons a part of a label or variable is left out of a published
// document; they are the values of the reason label of the counter of
// skipped label values.
const (
	ReasonTooManyAliases = "too_many_aliases" // berth.alias past record.MaxAliases
	ReasonBadTag         = "bad_tag"          // a tag with a comma or a control character
	ReasonTooManyTags    = "too_many_tags"    // tags past one TXT string
	// ReasonTooLong and ReasonReserved (docker.go) also name an alias left
	// out for its length or its last label.
)

// labelSkipReasons are the reasons a SkippedLabel may carry.
var labelSkipReasons = []string{ReasonTooManyAliases, ReasonBadTag, ReasonTooManyTags, ReasonTooLong, ReasonReserved}

// maxTagsLen bounds the tags as the plugin serves them, "tags=a,b", to one
// TXT string (record.MaxTagsTXT).
const maxTagsLen = record.MaxTagsTXT - len("tags=")

// SkippedLabel is a part of a label or variable left out of a document that
// is published without it. One SkippedLabel stands for every part of one
// key left out for one reason, so that a hostile value of a thousand parts
// is one log line.
type SkippedLabel struct {
	Key     string // the label or variable: berth.alias, SERVICE_TAGS
	Reason  string // one of labelSkipReasons
	Count   int    // how many parts
	Example string // the first of them, at most 64 bytes
}

func (s SkippedLabel) String() string {
	return fmt.Sprintf("%s: %d left out (%s), first %q", s.Key, s.Count, s.Reason, s.Example)
}

// skippedSet collects SkippedLabels, one per key and reason, in the order
// first seen.
type skippedSet []SkippedLabel

func (s *skippedSet) add(key, reason, part string) {
	for i := range *s {
		if (*s)[i].Key == key && (*s)[i].Reason == reason {
			(*s)[i].Count++
			return
		}
	}
	*s = append(*s, SkippedLabel{Key: key, Reason: reason, Count: 1, Example: truncateUTF8(part, 64)})
}

// meta is what a container says about its own names: its labels and, under
// --compat registrator, registrator's keys.
type meta struct {
	labels map[string]string
	// reg holds registrator's keys without the SERVICE_ prefix, upper
	// case (registrator reads the rest of the key in any case), from
	// labels and then environment variables, so that a variable wins over
	// a label of the same key as it does in registrator. Empty values are
	// left out: registrator treats an empty value as unset. nil without
	// the compat mode.
	reg map[string]regValue
}

type regValue struct {
	v    string
	from string // "label SERVICE_NAME" or "variable SERVICE_NAME", for messages
}

func newMeta(cfg *container.Config, compat string) meta {
	m := meta{labels: cfg.Labels}
	if compat != CompatRegistrator {
		return m
	}
	m.reg = map[string]regValue{}
	put := func(k, v, kind string) {
		rest, ok := strings.CutPrefix(k, registratorPrefix)
		if !ok || rest == "" {
			return
		}
		rest = strings.ToUpper(rest)
		if v == "" {
			delete(m.reg, rest)
			return
		}
		m.reg[rest] = regValue{v: v, from: kind + " " + k}
	}
	for _, k := range sortedKeys(cfg.Labels) {
		put(k, cfg.Labels[k], "label")
	}
	for _, kv := range cfg.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			put(k, v, "variable") // a later duplicate wins, as in registrator
		}
	}
	return m
}

// registrator looks up registrator's key (NAME, 80_NAME, ...).
func (m meta) registrator(key string) (regValue, bool) {
	v, ok := m.reg[key]
	return v, ok
}

// enabled decides whether the container is published at all: berth.enable
// when set, else registrator's SERVICE_IGNORE (any non-empty value, as in
// registrator), else --explicit wants berth.service or SERVICE_NAME.
func (m meta) enabled(explicit bool) *SkipError {
	if v, ok := m.labels[LabelEnable]; ok {
		on, err := strconv.ParseBool(v)
		switch {
		case err != nil:
			return skip(ReasonBadLabel, "%s=%q is not a boolean", LabelEnable, v)
		case !on:
			return skip(ReasonDisabled, "%s=false", LabelEnable)
		}
		return nil
	}
	if v, ok := m.registrator("IGNORE"); ok {
		return skip(ReasonDisabled, "%s=%q", v.from, truncateUTF8(v.v, 64))
	}
	_, byName := m.registrator("NAME")
	if _, ok := m.labels[LabelService]; explicit && !ok && !byName {
		return skip(ReasonNotOptedIn, "explicit mode and neither %s=true nor %s", LabelEnable, LabelService)
	}
	return nil
}

// service derives the service name: berth.service, else registrator's
// SERVICE_NAME, else Compose's <service>.<project>, else the container name.
func (m meta) service(name string) (string, *SkipError) {
	// A container name is one label even when it holds dots.
	raw, from, s := name, "container name", record.Label(name)
	if v, ok := m.labels[LabelService]; ok {
		raw, from = v, LabelService
		s = record.ServiceName(raw)
	} else if rv, ok := m.registrator("NAME"); ok {
		raw, from = rv.v, rv.from
		s = record.ServiceName(raw)
	} else if svc, proj := m.labels[LabelComposeService], m.labels[LabelComposeProject]; svc != "" && proj != "" {
		raw, from = svc+"."+proj, "compose labels"
		if ls, lp := record.Label(svc), record.Label(proj); ls != "" && lp != "" {
			s = ls + "." + lp
		} else {
			s = ""
		}
	}
	if err := checkService(s, raw, from); err != nil {
		return "", err
	}
	return s, nil
}

// checkService says why a sanitized service (or alias) s, derived from raw,
// cannot be published, or nil.
func checkService(s, raw, from string) *SkipError {
	switch {
	case s == "":
		return skip(ReasonEmptyName, "service %q (from %s) sanitizes to nothing", raw, from)
	case len(s) > record.MaxNameLen:
		return skip(ReasonTooLong, "service from %s is %d octets, over %d", from, len(s), record.MaxNameLen)
	case s == record.HostsLabel || strings.HasSuffix(s, "."+record.HostsLabel):
		return skip(ReasonReserved, "service %q ends in the reserved label %q", s, record.HostsLabel)
	}
	return nil
}

// srv reads berth.priority and berth.weight.
func (m meta) srv() (priority, weight int, err *SkipError) {
	if priority, err = m.uint16Label(LabelPriority, record.DefaultPriority); err != nil {
		return 0, 0, err
	}
	if weight, err = m.uint16Label(LabelWeight, record.DefaultWeight); err != nil {
		return 0, 0, err
	}
	return priority, weight, nil
}

func (m meta) uint16Label(key string, def int) (int, *SkipError) {
	v, ok := m.labels[key]
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 16)
	if err != nil {
		return 0, skip(ReasonBadLabel, "%s=%q is not a number from 0 to 65535", key, v)
	}
	return int(n), nil
}

// ports applies the port labels to the published ports: drops the ports
// registrator's SERVICE_<P>_IGNORE names, and names each port by
// berth.port.<P>.name, else SERVICE_<P>_NAME, else keeps its IANA name. P is
// the container port's number, for every protocol, in both.
func (m meta) ports(ports []record.Port) ([]record.Port, *SkipError) {
	kept := ports[:0:0]
	var ignored []string
	for _, p := range ports {
		n := strconv.Itoa(p.Port)
		if v, ok := m.registrator(n + "_IGNORE"); ok {
			if !slices.Contains(ignored, v.from) {
				ignored = append(ignored, v.from)
			}
			continue
		}
		key, raw, ok := LabelPortPrefix+n+".name", "", false
		if raw, ok = m.labels[key]; !ok {
			var rv regValue
			if rv, ok = m.registrator(n + "_NAME"); ok {
				key, raw = rv.from, rv.v
			}
		}
		if ok {
			if p.Name = record.Label(raw); p.Name == "" {
				return nil, skip(ReasonEmptyName, "%s=%q sanitizes to nothing", key, truncateUTF8(raw, 64))
			}
		}
		kept = append(kept, p)
	}
	if len(kept) == 0 && len(ignored) > 0 {
		return nil, skip(ReasonNoPort, "every published port is ignored (%s)", strings.Join(ignored, ", "))
	}
	return kept, nil
}

// aliases reads berth.alias: a comma-separated list of extra names, each
// sanitized as a service name. Empty ones, repeats and the service itself
// are dropped silently (they add no name); one that cannot be a service
// (the reserved last label, or a name, or a port lookup
// _<port>._<proto>.<alias>, over 253 octets) and those past
// record.MaxAliases are left out and reported.
func (m meta) aliases(service string, ports []record.Port, skipped *skippedSet) []string {
	raw, ok := m.labels[LabelAlias]
	if !ok {
		return nil
	}
	var out []string
	for _, part := range strings.Split(raw, ",") {
		a := record.ServiceName(part)
		if a == "" || a == service || slices.Contains(out, a) {
			continue
		}
		if err := checkService(a, part, LabelAlias); err != nil {
			skipped.add(LabelAlias, err.Reason, part)
			continue
		}
		if err := checkLengths(&record.Container{Service: a, Ports: ports}); err != nil {
			skipped.add(LabelAlias, err.Reason, part)
			continue
		}
		if len(out) == record.MaxAliases {
			skipped.add(LabelAlias, ReasonTooManyAliases, part)
			continue
		}
		out = append(out, a)
	}
	return out
}

// tags reads registrator's SERVICE_TAGS: a comma-separated list in which
// "\," is a comma inside a tag, as in registrator. Empty tags and repeats
// are dropped; a tag with a comma or a control character is left out (the
// TXT record would carry the list as "tags=a,b"), and so are the tags past
// one TXT string. Nil without the compat mode.
func (m meta) tags(skipped *skippedSet) []string {
	v, ok := m.registrator("TAGS")
	if !ok {
		return nil
	}
	var out []string
	size, full := -1, false // -1: n tags take n-1 commas
	for _, t := range splitEscaped(v.v) {
		t = strings.TrimSpace(t)
		switch {
		case t == "" || slices.Contains(out, t):
			continue
		case record.ValidTag(t) != nil:
			skipped.add(v.from, ReasonBadTag, t)
			continue
		case full || size+1+len(t) > maxTagsLen:
			// The first that does not fit ends the list: a shorter
			// one after it would reorder what the user wrote.
			full = true
			skipped.add(v.from, ReasonTooManyTags, t)
			continue
		}
		size += 1 + len(t)
		out = append(out, t)
	}
	return out
}

// splitEscaped splits s at every comma not preceded by a backslash, and
// turns "\," into ",". Other backslashes stay.
func splitEscaped(s string) []string {
	var parts []string
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == ',':
			b.WriteByte(',')
			i++
		case s[i] == ',':
			parts = append(parts, b.String())
			b.Reset()
		default:
			b.WriteByte(s[i])
		}
	}
	return append(parts, b.String())
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// labelNotes remembers the SkippedLabels of each container already logged
// and counted, so that each is logged and counted once, when it first
// appears, not every reconcile (as noteUnbound does for bindings).
type labelNotes map[string][]SkippedLabel

// note logs and counts the SkippedLabels of container id not seen before.
func (n labelNotes) note(id, name string, skipped []SkippedLabel, log *slog.Logger, count *prometheus.CounterVec) {
	for _, s := range skipped {
		if slices.Contains(n[id], s) {
			continue
		}
		count.WithLabelValues(s.Reason).Inc()
		log.Info("label value not published", "id", shortID(id), "name", name, "key", s.Key, "reason", s.Reason,
			"count", s.Count, "first", s.Example)
	}
	if len(skipped) == 0 {
		delete(n, id)
	} else {
		n[id] = skipped
	}
}
