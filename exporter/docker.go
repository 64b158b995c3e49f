package exporter

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/container"

	"github.com/berthdns/berth/record"
)

// Reasons a running container is not published; they are the values of the
// reason label of berth_exporter_containers_skipped.
const (
	ReasonDisabled   = "disabled"          // berth.enable=false, or registrator's SERVICE_IGNORE
	ReasonNotOptedIn = "not_opted_in"      // explicit mode, no opt-in label
	ReasonNoPort     = "no_published_port" // nothing published outside loopback
	ReasonNoAddress  = "no_address"        // only wildcard bindings of a family with no advertise address
	ReasonBadLabel   = "bad_label"         // a berth.* label that does not parse
	ReasonEmptyName  = "empty_name"        // a name that sanitizes to nothing
	ReasonTooLong    = "name_too_long"     // a derived DNS name over 253 octets
	ReasonReserved   = "reserved_name"     // a service ending in "hosts"
	ReasonInvalid    = "invalid_document"  // the document fails record validation
)

// skipReasons are all the Reason constants.
var skipReasons = []string{ReasonDisabled, ReasonNotOptedIn, ReasonNoPort, ReasonNoAddress, ReasonBadLabel,
	ReasonEmptyName, ReasonTooLong, ReasonReserved, ReasonInvalid}

// SkipError says why a running container is not published.
type SkipError struct {
	Reason string // one of the Reason constants
	Detail string
}

func (e *SkipError) Error() string { return e.Reason + ": " + e.Detail }

func skip(reason, format string, args ...any) *SkipError {
	return &SkipError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Mapper turns Docker's inspect result into the container document of
// namespace v1.
type Mapper struct {
	// Explicit publishes only containers labelled berth.enable=true or
	// berth.service=....
	Explicit bool
	// Addrs are the host's advertise addresses; a wildcard binding is
	// published on the first of the same family.
	Addrs []netip.Addr
	// AllowLoopback lets a loopback advertise address stand for wildcard
	// bindings. A binding on a loopback host IP is never published.
	AllowLoopback bool
	// Compat is a Compat* constant: CompatRegistrator also reads
	// registrator's SERVICE_* labels and environment variables (labels.go).
	Compat string
}

// SkippedBinding is a port binding not published because of its host IP's
// address class (record.AddrClass): loopback, link-local or multicast.
type SkippedBinding struct {
	Port     string // container port, "80/tcp"
	HostIP   netip.Addr
	HostPort int
	Reason   string // a record.Class* constant
}

func (b SkippedBinding) String() string {
	return b.Port + " on " + netip.AddrPortFrom(b.HostIP, uint16(b.HostPort)).String()
}

// Map returns c's document; nil and nil when c is not running (it simply has
// no document), nil and a *SkipError when it runs but must not be published.
// A returned document has passed record's validation.
func (m *Mapper) Map(c *container.InspectResponse) (*record.Container, error) {
	doc, _, err := m.MapAll(c)
	return doc, err
}

// MapAll is Map that also lists the bindings left out for their host IP's
// address class, so that the caller can log and count them.
func (m *Mapper) MapAll(c *container.InspectResponse) (*record.Container, []SkippedBinding, error) {
	r, err := m.MapResult(c)
	return r.Doc, r.Bindings, err
}

// Result is one container's mapping: its document and what was left out
// of it.
type Result struct {
	Doc      *record.Container
	Bindings []SkippedBinding // left out for their host IP's address class
	Labels   []SkippedLabel   // label values left out of Doc (labels.go)
	// Tags are registrator's SERVICE_TAGS under CompatRegistrator, parsed
	// and bounded for a TXT record; they are also Doc.Tags.
	Tags []string
}

// MapResult is MapAll that also lists the label values left out of the
// document, so that the caller can log and count them, and the tags.
func (m *Mapper) MapResult(c *container.InspectResponse) (Result, error) {
	if c.State == nil || !c.State.Running || c.State.Restarting || c.Config == nil {
		return Result{}, nil
	}
	md := newMeta(c.Config, m.Compat)
	if err := md.enabled(m.Explicit); err != nil {
		return Result{}, err
	}

	rawName := strings.TrimPrefix(c.Name, "/")
	doc := &record.Container{
		V:        record.Version,
		ID:       c.ID,
		Name:     record.Label(rawName),
		Image:    truncate(c.Config.Image, record.MaxImageLen),
		Health:   record.HealthNone,
		Paused:   c.State.Paused,
		Priority: record.DefaultPriority,
		Weight:   record.DefaultWeight,
	}
	if doc.Name == "" {
		return Result{}, skip(ReasonEmptyName, "container name %q sanitizes to nothing", rawName)
	}
	if h := c.State.Health; h != nil {
		switch s := string(h.Status); s {
		case record.HealthHealthy, record.HealthUnhealthy, record.HealthStarting:
			doc.Health = s
		}
	}

	var err *SkipError
	if doc.Service, err = md.service(rawName); err != nil {
		return Result{}, err
	}
	if doc.Priority, doc.Weight, err = md.srv(); err != nil {
		return Result{}, err
	}
	r := Result{}
	if doc.Ports, r.Bindings, err = m.ports(c); err != nil {
		return r, err
	}
	if doc.Ports, err = md.ports(doc.Ports); err != nil {
		return r, err
	}
	if err := checkLengths(doc); err != nil {
		return r, err
	}
	var skipped skippedSet
	doc.Aliases = md.aliases(doc.Service, doc.Ports, &skipped)
	r.Tags = md.tags(&skipped)
	doc.Tags = r.Tags
	if err := doc.Validate(); err != nil {
		return Result{}, skip(ReasonInvalid, "%v", err)
	}
	if b, _ := json.Marshal(doc); len(b) > record.MaxDocumentSize {
		return Result{}, skip(ReasonInvalid, "document is %d bytes, over %d", len(b), record.MaxDocumentSize)
	}
	r.Doc, r.Labels = doc, skipped
	return r, nil
}

// ports lists every published binding that a client elsewhere can dial,
// sorted so that an unchanged container always marshals to the same bytes,
// and the bindings left out for their host IP's address class. Each port
// has its IANA name; the labels may rename it (meta.ports in labels.go).
func (m *Mapper) ports(c *container.InspectResponse) ([]record.Port, []SkippedBinding, *SkipError) {
	if c.NetworkSettings == nil {
		return nil, nil, skip(ReasonNoPort, "no network settings")
	}
	if detached(c) {
		return nil, nil, skip(ReasonNoPort, "bindings kept, but no network to forward them to")
	}
	var ports []record.Port
	var skipped []SkippedBinding
	noAddr := false
	for p, bindings := range c.NetworkSettings.Ports {
		proto := string(p.Proto())
		name := record.PortName(int(p.Num()), proto)
		for _, b := range bindings {
			hostPort, err := strconv.Atoi(b.HostPort)
			if err != nil || hostPort < 1 || hostPort > 65535 {
				continue // not (yet) bound
			}
			addr, class := m.dialAddr(b.HostIP)
			switch {
			case class != "":
				sb := SkippedBinding{Port: p.String(), HostIP: b.HostIP.Unmap(), HostPort: hostPort, Reason: class}
				if !slices.Contains(skipped, sb) {
					skipped = append(skipped, sb)
				}
				continue
			case !addr.IsValid():
				noAddr = true
				continue
			}
			port := record.Port{Port: int(p.Num()), Proto: proto, Name: name, Addr: addr, HostPort: hostPort}
			if !slices.Contains(ports, port) {
				ports = append(ports, port)
			}
		}
	}
	slices.SortFunc(skipped, func(a, b SkippedBinding) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), a.HostIP.Compare(b.HostIP), cmp.Compare(a.HostPort, b.HostPort))
	})
	if len(ports) == 0 {
		if noAddr {
			return nil, skipped, skip(ReasonNoAddress, "only wildcard bindings of an address family without an advertise address")
		}
		return nil, skipped, skip(ReasonNoPort, "no port published on an address other machines can dial")
	}
	slices.SortFunc(ports, func(a, b record.Port) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto),
			a.Addr.Compare(b.Addr), cmp.Compare(a.HostPort, b.HostPort))
	})
	return ports, skipped, nil
}

// detached reports a container cut off from every network of a network
// mode that forwards its bindings through one (bridge, or a named network).
// Docker drops the bindings then; Podman keeps listing them, though nothing
// answers on them until the container is connected again. Modes whose
// forwarding needs no network, such as rootless Podman's slirp4netns or
// pasta (whose Networks is always empty), keep their bindings.
func detached(c *container.InspectResponse) bool {
	if len(c.NetworkSettings.Networks) > 0 || c.HostConfig == nil {
		return false
	}
	mode := c.HostConfig.NetworkMode
	switch {
	case mode.IsBridge(), mode.IsDefault(), mode == "":
		return true
	case mode.IsHost(), mode.IsNone(), mode.IsContainer(), mode == "private",
		strings.HasPrefix(string(mode), "slirp4netns"), strings.HasPrefix(string(mode), "pasta"),
		strings.HasPrefix(string(mode), "ns:"):
		return false
	}
	return true // a user-defined network
}

// dialAddr is the address a client dials for a binding on hostIP: hostIP
// itself when specific, else the first advertise address of its family
// (none: an invalid address). A specific hostIP that record.Publishable
// refuses, loopback included whatever AllowLoopback says (a binding on
// loopback is meant to stay on this machine), gives its class instead.
func (m *Mapper) dialAddr(hostIP netip.Addr) (netip.Addr, string) {
	hostIP = hostIP.Unmap()
	if !hostIP.IsValid() {
		hostIP = netip.IPv4Unspecified() // an empty HostIp means every IPv4 interface
	}
	if !hostIP.IsUnspecified() {
		if class := record.AddrClass(hostIP, false); class != "" {
			return netip.Addr{}, class
		}
		return hostIP, ""
	}
	for _, a := range m.Addrs {
		// An advertise address New would refuse is not one.
		if a = a.Unmap(); a.Is4() == hostIP.Is4() && record.Publishable(a, m.AllowLoopback) == nil {
			return a, ""
		}
	}
	return netip.Addr{}, ""
}

// checkLengths rejects a document whose longest derived name, the port
// lookup _<port>._<proto>.<service>, is over DNS's limit even before the
// zone is appended (the plugin checks again with its zone).
func checkLengths(doc *record.Container) *SkipError {
	for _, p := range doc.Ports {
		for _, label := range []string{strconv.Itoa(p.Port), p.Name} {
			if label == "" {
				continue
			}
			name := "_" + label + "._" + p.Proto + "." + doc.Service
			if err := record.CheckLength(name, ""); err != nil {
				return skip(ReasonTooLong, "%v", err)
			}
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
