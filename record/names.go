package record

import (
	"errors"
	"fmt"
	"strings"
)

// MaxLabelLen and MaxNameLen are DNS's limits in presentation form, without
// the trailing dot.
const (
	MaxLabelLen = 63
	MaxNameLen  = 253
)

// HostsLabel is the label under which hosts and their containers are named;
// a service may not end in it.
const HostsLabel = "hosts"

// Label sanitizes s to one DNS label: lower case, every character outside
// a-z 0-9 - becomes -, runs of - fold to one, leading and trailing - are cut,
// and the result is at most 63 octets. It may return "" (not publishable).
func Label(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	dash := false
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
			continue
		}
		if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	l := strings.Trim(b.String(), "-")
	if len(l) > MaxLabelLen {
		l = strings.TrimRight(l[:MaxLabelLen], "-")
	}
	return l
}

// ServiceName sanitizes a dotted service name label by label and drops the
// labels that sanitize to nothing.
func ServiceName(s string) string {
	parts := strings.Split(s, ".")
	labels := parts[:0]
	for _, p := range parts {
		if l := Label(p); l != "" {
			labels = append(labels, l)
		}
	}
	return strings.Join(labels, ".")
}

// ValidLabel reports why s is not a sanitized label, or nil.
func ValidLabel(s string) error {
	if s == "" {
		return errors.New("empty label")
	}
	if Label(s) != s {
		return fmt.Errorf("%q is not a sanitized DNS label (a-z, 0-9, inner -, at most 63 octets)", s)
	}
	return nil
}

// ValidService reports why s is not a publishable service name, or nil: each
// label sanitized, the last label not "hosts".
func ValidService(s string) error {
	if s == "" {
		return errors.New("empty service name")
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("service name is %d octets, over %d", len(s), MaxNameLen)
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if err := ValidLabel(l); err != nil {
			return err
		}
	}
	if labels[len(labels)-1] == HostsLabel {
		return fmt.Errorf("service %q ends in the reserved label %q", s, HostsLabel)
	}
	return nil
}

// CheckLength reports whether name fits DNS's 253-octet limit once the zone
// is appended. zone may have a trailing dot.
func CheckLength(name, zone string) error {
	zone = strings.TrimSuffix(zone, ".")
	n := len(name)
	if zone != "" {
		n += 1 + len(zone)
	}
	if n > MaxNameLen {
		return fmt.Errorf("%s.%s is %d octets, over %d", name, zone, n, MaxNameLen)
	}
	return nil
}

// CleanPrefix is the one rule for the KV prefix, for the exporter and the
// plugin alike: surrounding slashes are dropped ("/berth/" is "berth"),
// and what is left must be non-empty, without empty segments ("a//b") or
// spaces.
func CleanPrefix(p string) (string, error) {
	clean := strings.Trim(p, "/")
	switch {
	case clean == "":
		return "", fmt.Errorf("prefix %q: empty", p)
	case strings.Contains(clean, "//"):
		return "", fmt.Errorf("prefix %q: an empty segment (//)", p)
	case strings.ContainsAny(clean, " \t\n"):
		return "", fmt.Errorf("prefix %q: white space", p)
	}
	return clean, nil
}

// HostKey is the key of host's document.
func HostKey(prefix, host string) string { return prefix + "/hosts/" + host }

// HostsPrefix is the key prefix under which all host documents live.
func HostsPrefix(prefix string) string { return prefix + "/hosts/" }

// ContainersPrefix is the key prefix of host's container documents; the
// trailing slash keeps host "a" from matching host "ab".
func ContainersPrefix(prefix, host string) string { return prefix + "/containers/" + host + "/" }

// AllContainersPrefix is the key prefix of every host's container documents.
func AllContainersPrefix(prefix string) string { return prefix + "/containers/" }

// ContainerKey is the key of one container document.
func ContainerKey(prefix, host, id string) string { return ContainersPrefix(prefix, host) + id }

// HostFromContainerKey splits <prefix>/containers/<host>/<id> into host and id.
func HostFromContainerKey(prefix, key string) (host, id string, ok bool) {
	rest, found := strings.CutPrefix(key, AllContainersPrefix(prefix))
	if !found {
		return "", "", false
	}
	host, id, found = strings.Cut(rest, "/")
	if !found || host == "" || id == "" || strings.Contains(id, "/") {
		return "", "", false
	}
	return host, id, true
}

// InZone reports whether name is origin or below it; both are lower case
// and fully qualified. It is the one answer to "is this name in the zone"
// for the plugin, the resolver and the proxy. A name that ends in origin is
// below it only where a label boundary precedes the suffix: an unescaped
// dot, so that "a\.c.example.org." is not under "c.example.org.". It
// allocates nothing: the plugin calls it for every query.
func InZone(name, origin string) bool {
	if origin == "." || name == origin {
		return true
	}
	cut := len(name) - len(origin)
	if cut < 2 || name[cut-1] != '.' || name[cut:] != origin {
		return false
	}
	escapes := 0
	for i := cut - 2; i >= 0 && name[i] == '\\'; i-- {
		escapes++
	}
	return escapes%2 == 0
}
