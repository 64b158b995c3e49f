package record

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"
)

// Version is the major version of the documents this package reads and writes.
const Version = 1

// MaxDocumentSize bounds a single KV value; anything larger is rejected
// before it is parsed.
const MaxDocumentSize = 64 << 10

// MaxHostBytes bounds one host's container documents as a reader reads them
// from Consul (some 15,000 containers): a host whose subtree is larger is
// hostile or broken, and a reader (the plugin, berth hosts, berth ui) cuts
// its read off there rather than hold what the host chose to write.
const MaxHostBytes = 16 << 20

// MaxHostEntryBytes bounds the read of a host's own document: its layout 2
// entry (its rev keys and the document, one of at most MaxDocumentSize) or
// its layout 1 key.
const MaxHostEntryBytes = 1 << 20

// MaxImageLen keeps "image=<image>" within one 255-octet TXT string.
const MaxImageLen = 249

// DefaultPriority and DefaultWeight apply to SRV records when neither the
// container's labels nor the document say otherwise.
const (
	DefaultPriority = 10
	DefaultWeight   = 10
)

// Health states of a container, as Docker reports them; HealthNone means the
// image has no health check.
const (
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
	HealthStarting  = "starting"
	HealthNone      = "none"
)

// ErrUnsupportedVersion is returned for a document of another major version;
// readers skip such documents.
var ErrUnsupportedVersion = errors.New("unsupported document version")

// Host is the document at <prefix>/hosts/<host>.
type Host struct {
	V        int          `json:"v"`
	Name     string       `json:"name"`
	Addrs    []netip.Addr `json:"addrs"`
	Rev      uint64       `json:"rev"`
	Exporter string       `json:"exporter,omitempty"`
}

// Container is the document at <prefix>/containers/<host>/<container-id>.
type Container struct {
	V        int    `json:"v"`
	ID       string `json:"id"`
	Name     string `json:"name"`
	Service  string `json:"service"`
	Image    string `json:"image"`
	Health   string `json:"health"`
	Paused   bool   `json:"paused"`
	Priority int    `json:"priority"`
	Weight   int    `json:"weight"`
	Ports    []Port `json:"ports"`
	// Aliases are extra names of the service, each served with the
	// service's own records (README.md#names-and-answers). Optional: a
	// reader that does not know them serves the rest.
	Aliases []string `json:"aliases,omitempty"`
	// Tags are free-form words (registrator's SERVICE_TAGS), served in the
	// container's TXT record as tags=a,b. Optional, as Aliases.
	Tags []string `json:"tags,omitempty"`
}

// MaxAliases bounds a container's extra names.
const MaxAliases = 8

// Port is one published binding of a container port.
type Port struct {
	Port     int        `json:"port"`
	Proto    string     `json:"proto"`
	Name     string     `json:"name"`
	Addr     netip.Addr `json:"addr"`
	HostPort int        `json:"host_port"`
}

// Healthy reports whether the container may receive traffic: not paused, and
// healthy by its check or without one.
func (c *Container) Healthy() bool {
	return !c.Paused && (c.Health == HealthHealthy || c.Health == HealthNone)
}

// ShortID is the 12-hex-digit form Docker shows.
func (c *Container) ShortID() string { return c.ID[:12] }

// DecodeHost parses and validates a host document read from key.
func DecodeHost(key string, value []byte) (*Host, error) {
	h := &Host{}
	if err := decode(value, h, &h.V); err != nil {
		return nil, fmt.Errorf("host document %s: %w", key, err)
	}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("host document %s: %w", key, err)
	}
	return h, nil
}

// DecodeHostOf is DecodeHost for the document of host, read from key: it
// must name the host its key names, in either KV layout.
func DecodeHostOf(host, key string, value []byte) (*Host, error) {
	h, err := DecodeHost(key, value)
	if err == nil && h.Name != host {
		return nil, fmt.Errorf("host document %s: name %s does not match its key", key, h.Name)
	}
	return h, err
}

// DecodeContainerOf is DecodeContainer for the document of container id,
// read from key: its id must be the one its key names.
func DecodeContainerOf(id, key string, value []byte) (*Container, error) {
	c, err := DecodeContainer(key, value)
	if err == nil && c.ID != id {
		return nil, fmt.Errorf("container document %s: id %s does not match its key", key, c.ID)
	}
	return c, err
}

// DecodeContainer parses and validates a container document read from key.
// Priority and weight default to 10 when the document omits them.
func DecodeContainer(key string, value []byte) (*Container, error) {
	c := &Container{Priority: DefaultPriority, Weight: DefaultWeight}
	if err := decode(value, c, &c.V); err != nil {
		return nil, fmt.Errorf("container document %s: %w", key, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("container document %s: %w", key, err)
	}
	return c, nil
}

// decode parses a document of this major version in one pass; anything
// else is parsed again for the head alone, so that a document of a later
// major version is reported as such rather than as a type error.
func decode(value []byte, doc any, version *int) error {
	if len(value) > MaxDocumentSize {
		return fmt.Errorf("%d bytes, larger than the %d allowed", len(value), MaxDocumentSize)
	}
	err := json.Unmarshal(value, doc)
	if err == nil && *version == Version {
		return nil
	}
	var head struct {
		V *int `json:"v"`
	}
	if herr := json.Unmarshal(value, &head); herr != nil {
		return fmt.Errorf("not a JSON object: %w", herr)
	}
	if head.V == nil {
		return errors.New(`no "v" field`)
	}
	if *head.V != Version {
		return fmt.Errorf("%w %d (this reader knows %d)", ErrUnsupportedVersion, *head.V, Version)
	}
	return err
}

// Validate checks a host document against the contract and normalizes its
// addresses in place (an IPv4-mapped IPv6 address becomes IPv4).
func (h *Host) Validate() error {
	if h.V != Version {
		return fmt.Errorf("%w %d", ErrUnsupportedVersion, h.V)
	}
	if err := ValidLabel(h.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if len(h.Addrs) == 0 {
		return errors.New("addrs: no address")
	}
	for i, a := range h.Addrs {
		if err := validAddr(a); err != nil {
			return fmt.Errorf("addrs[%d]: %w", i, err)
		}
		h.Addrs[i] = a.Unmap()
	}
	return nil
}

// Validate checks a container document against the contract and normalizes
// its addresses in place (an IPv4-mapped IPv6 address becomes IPv4).
func (c *Container) Validate() error {
	if c.V != Version {
		return fmt.Errorf("%w %d", ErrUnsupportedVersion, c.V)
	}
	if err := validID(c.ID); err != nil {
		return fmt.Errorf("id: %w", err)
	}
	if err := ValidLabel(c.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if err := ValidService(c.Service); err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if len(c.Image) > MaxImageLen || !printable(c.Image) {
		return fmt.Errorf("image: must be printable and at most %d bytes", MaxImageLen)
	}
	switch c.Health {
	case HealthHealthy, HealthUnhealthy, HealthStarting, HealthNone:
	default:
		return fmt.Errorf("health: %q is not one of healthy, unhealthy, starting, none", c.Health)
	}
	if c.Priority < 0 || c.Priority > 65535 {
		return fmt.Errorf("priority: %d out of range 0-65535", c.Priority)
	}
	if c.Weight < 0 || c.Weight > 65535 {
		return fmt.Errorf("weight: %d out of range 0-65535", c.Weight)
	}
	if len(c.Aliases) > MaxAliases {
		return fmt.Errorf("aliases: %d, more than %d", len(c.Aliases), MaxAliases)
	}
	for i, a := range c.Aliases {
		if err := ValidService(a); err != nil {
			return fmt.Errorf("aliases[%d]: %w", i, err)
		}
		if a == c.Service || slices.Contains(c.Aliases[:i], a) {
			return fmt.Errorf("aliases[%d]: %q is the service's name or an alias already", i, a)
		}
	}
	if err := validTags(c.Tags); err != nil {
		return fmt.Errorf("tags: %w", err)
	}
	if len(c.Ports) == 0 {
		return errors.New("ports: no published port")
	}
	for i := range c.Ports {
		if err := c.Ports[i].validate(); err != nil {
			return fmt.Errorf("ports[%d]: %w", i, err)
		}
	}
	return nil
}

// TagsTXT is the TXT character-string that carries a container's tags.
func TagsTXT(tags []string) string { return "tags=" + strings.Join(tags, ",") }

// EscapeTXT is s in the presentation form miekg/dns packs into a TXT
// character-string of exactly s's bytes: it decodes the escapes \DDD and
// \X as it packs, so a document's "prod\044admin" would go out as
// "prod,admin" and "\027" as ESC. Only the backslash is special to it,
// so only the backslash is escaped. The bytes a client, a secondary and
// `berth ls` see are then the document's text alike; control bytes never
// reach a TXT string, as validation refuses them (printable).
func EscapeTXT(s string) string { return strings.ReplaceAll(s, `\`, `\\`) }

// ValidTag reports why t cannot be a tag: empty, with a comma (the
// separator of tags=a,b), or not printable; nil when it can.
func ValidTag(t string) error {
	if t == "" || strings.Contains(t, ",") || !printable(t) {
		return fmt.Errorf("%q: empty, with a comma, or not printable", t)
	}
	return nil
}

// MaxTagsTXT is the most tags=a,b may take: one TXT character-string.
const MaxTagsTXT = 255

// validTags checks tags fit their TXT string: each a ValidTag, all of them
// within MaxTagsTXT as tags=a,b.
func validTags(tags []string) error {
	for i, t := range tags {
		if err := ValidTag(t); err != nil {
			return fmt.Errorf("[%d] %w", i, err)
		}
	}
	if len(tags) > 0 && len(TagsTXT(tags)) > MaxTagsTXT {
		return fmt.Errorf("%d octets as %q, over one TXT string's 255", len(TagsTXT(tags)), "tags=...")
	}
	return nil
}

func (p *Port) validate() error {
	if p.Port < 1 || p.Port > 65535 {
		return fmt.Errorf("port %d out of range 1-65535", p.Port)
	}
	if p.HostPort < 1 || p.HostPort > 65535 {
		return fmt.Errorf("host_port %d out of range 1-65535", p.HostPort)
	}
	switch p.Proto {
	case "tcp", "udp", "sctp":
	default:
		return fmt.Errorf("proto %q is not tcp, udp or sctp", p.Proto)
	}
	if p.Name != "" {
		if err := ValidLabel(p.Name); err != nil {
			return fmt.Errorf("name: %w", err)
		}
	}
	if err := validAddr(p.Addr); err != nil {
		return fmt.Errorf("addr: %w", err)
	}
	p.Addr = p.Addr.Unmap()
	return nil
}

func validAddr(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("missing or not an IP address")
	case a.Zone() != "":
		return fmt.Errorf("%s has a zone, which clients elsewhere cannot dial", a)
	case a.IsUnspecified():
		return fmt.Errorf("%s is unspecified, not an address to dial", a)
	case a.IsMulticast():
		return fmt.Errorf("%s is multicast", a)
	}
	return nil
}

func validID(id string) error {
	if len(id) < 12 || len(id) > 64 {
		return fmt.Errorf("%q must be 12 to 64 hex digits", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%q must be lower-case hex", id)
		}
	}
	return nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
