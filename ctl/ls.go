package ctl

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/berthdns/berth/record"
)

// Service is one service name and the instances that publish it, as `berth
// ls -o json` and the web page give it.
type Service struct {
	Service   string     `json:"service"`
	Instances []Instance `json:"instances"`
}

// Instance is one container publishing a service.
type Instance struct {
	Name      string     `json:"name"` // the container's label: <name>.<host>.hosts.<zone>
	Host      string     `json:"host"`
	ID        string     `json:"id"`
	Image     string     `json:"image"`
	Health    string     `json:"health"`
	Paused    bool       `json:"paused"`
	Priority  int        `json:"priority"`
	Weight    int        `json:"weight"`
	Aliases   []string   `json:"aliases"`
	Index     uint64     `json:"index"` // the document's ModifyIndex
	Endpoints []Endpoint `json:"endpoints"`
}

// Endpoint is one published port: what a client dials, and whether the
// service's DNS answers include it.
type Endpoint struct {
	Port     int    `json:"port"`
	Proto    string `json:"proto"`
	PortName string `json:"port_name,omitempty"`
	Endpoint string `json:"endpoint"` // addr:host_port
	Served   bool   `json:"served"`
	// NotServed are the reasons the service's answers leave it out:
	// "unhealthy", "starting", "paused", or the plugin's reasons
	// ("refused", "too_long", "loopback_address", ...).
	NotServed []string `json:"not_served,omitempty"`
}

// Services lists ns's services, by name, each instance by host and name.
// An endpoint is served when the plugin would put it in the service's
// answers: the container healthy and not paused, the service's name
// neither refused by the ownership policy nor too long, its address
// publishable and within its host's ranges.
func Services(ns *Namespace, z zoneOptions) []Service {
	origin, allowLoopback := z.origin, z.allowLoopback
	// The plugin's findings on services' own names, by host, service and
	// name, to tell which service names it leaves out for whom: a finding
	// on an alias, or on another service's claim of the same name, is not
	// this service's (the plugin serves the name to the claim it keeps).
	left := map[[3]string][]string{}
	for _, f := range zoneFindings(ns, z) {
		if f.Alias {
			continue
		}
		k := [3]string{f.Host, f.Service, f.Name}
		left[k] = append(left[k], f.Reason)
	}
	byName := map[string]*Service{}
	for _, h := range ns.Hosts {
		for _, c := range h.Containers {
			d := c.Doc
			s := byName[d.Service]
			if s == nil {
				s = &Service{Service: d.Service}
				byName[d.Service] = s
			}
			inst := Instance{Name: d.Name, Host: h.Doc.Name, ID: d.ID, Image: d.Image, Health: d.Health,
				Paused: d.Paused, Priority: d.Priority, Weight: d.Weight, Aliases: d.Aliases, Index: c.Index}
			if inst.Aliases == nil {
				inst.Aliases = []string{}
			}
			var why []string
			switch {
			case d.Paused:
				why = append(why, "paused")
			case !d.Healthy():
				why = append(why, d.Health)
			}
			why = append(why, nameFindings(left, h.Doc.Name, d.Service, d.Service+"."+origin)...)
			for _, p := range d.Ports {
				e := Endpoint{Port: p.Port, Proto: p.Proto, PortName: p.Name,
					Endpoint: netip.AddrPortFrom(p.Addr, uint16(p.HostPort)).String()}
				e.NotServed = slices.Clone(why)
				if class := record.AddrClass(p.Addr, allowLoopback); class != "" {
					e.NotServed = append(e.NotServed, class)
				} else if ns.Policy != nil && ns.Policy.Address(h.Doc.Name, p.Addr) != nil {
					e.NotServed = append(e.NotServed, record.ReasonForeignAddress)
				}
				e.Served = len(e.NotServed) == 0
				inst.Endpoints = append(inst.Endpoints, e)
			}
			s.Instances = append(s.Instances, inst)
		}
	}
	out := make([]Service, 0, len(byName))
	for _, s := range byName {
		slices.SortFunc(s.Instances, func(a, b Instance) int {
			return cmp.Or(strings.Compare(a.Host, b.Host), strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
		})
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b Service) int { return strings.Compare(a.Service, b.Service) })
	return out
}

// nameFindings are the reasons the plugin left out service's own name
// name (fully qualified) for host's containers; a name-wide reason, such
// as the policy refusing the claim, leaves out every one of its endpoints.
func nameFindings(left map[[3]string][]string, host, service, name string) []string {
	return slices.Clone(left[[3]string{host, service, name}])
}

// findService is the service named name (or having it as an alias), name
// with or without the zone.
func findService(services []Service, name, zone string) []Service {
	name = strings.TrimSuffix(strings.ToLower(strings.TrimSuffix(name, ".")), "."+zone)
	var out []Service
	for _, s := range services {
		if s.Service == name {
			out = append(out, s)
			continue
		}
		var insts []Instance
		for _, i := range s.Instances {
			if slices.Contains(i.Aliases, name) {
				insts = append(insts, i)
			}
		}
		if len(insts) > 0 {
			out = append(out, Service{Service: s.Service, Instances: insts})
		}
	}
	return out
}

// runLs prints the services (one of them, with an argument).
func runLs(ns *Namespace, o *options, stdout, stderr io.Writer) int {
	if len(o.args) > 1 {
		fmt.Fprintln(stderr, "berth ls: at most one SERVICE")
		return 2
	}
	services := Services(ns, o.zoneOptions())
	if len(o.args) == 1 {
		services = findService(services, o.args[0], o.zone)
		if len(services) == 0 {
			fmt.Fprintf(stderr, "berth ls: no service %s in %s/\n", clean(o.args[0]), ns.Prefix)
			return 1
		}
	}
	if o.output == "json" {
		writeJSON(stdout, services)
	} else {
		t := newTable(stdout, "SERVICE", "INSTANCE", "HOST", "PORT", "ENDPOINT", "HEALTH", "SERVED", "INDEX")
		for _, s := range services {
			for _, i := range s.Instances {
				health := i.Health
				if i.Paused {
					health += ",paused"
				}
				for _, e := range i.Endpoints {
					port := strconv.Itoa(e.Port) + "/" + e.Proto
					if e.PortName != "" {
						port += " (" + e.PortName + ")"
					}
					served := "yes"
					if !e.Served {
						served = "no: " + strings.Join(e.NotServed, ",")
					}
					t.row(s.Service, i.Name, i.Host, port, e.Endpoint, health, served, strconv.FormatUint(i.Index, 10))
				}
			}
		}
		t.flush()
	}
	warnProblems(ns, stderr)
	return 0
}

// warnProblems says on stderr that some documents are not shown because
// the plugin would not serve them at all.
func warnProblems(ns *Namespace, stderr io.Writer) {
	if n := len(ns.Problems); n > 0 {
		fmt.Fprintf(stderr, "berth: %s not shown: the plugin would not serve them (berth check lists them)\n",
			plural(n, "document"))
	}
}
