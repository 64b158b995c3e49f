package ctl

import (
	"fmt"
	"io"

	"github.com/berthdns/berth/record"
)

// aclPolicy is `berth policy -o json`: the body Consul's PUT
// /v1/acl/policy takes, so the output can be sent to it as it is.
type aclPolicy struct {
	Name        string
	Description string
	Rules       string
}

// runPolicy prints the ACL policy of host's exporter, or the plugin's.
func runPolicy(o *options, stdout, stderr io.Writer) int {
	var p aclPolicy
	switch {
	case o.plugin && len(o.args) == 0:
		p = aclPolicy{Name: "berth-plugin", Description: "Berth's CoreDNS plugin: reads " + o.prefix + "/",
			Rules: record.PluginACL(o.prefix)}
	case !o.plugin && len(o.args) == 1:
		host := o.args[0]
		if err := record.ValidLabel(host); err != nil {
			fmt.Fprintf(stderr, "berth policy: host: %v\n", err)
			return 2
		}
		p = aclPolicy{Name: "berth-exporter-" + host,
			Description: "berth-exporter of host " + host + ": its own documents under " + o.prefix + "/ and its session",
			Rules:       record.ExporterACL(o.prefix, host)}
	default:
		fmt.Fprintln(stderr, "berth policy: give one HOST, or --plugin alone")
		return 2
	}
	if o.output == "json" {
		writeJSON(stdout, p)
	} else {
		fmt.Fprint(stdout, p.Rules)
	}
	return 0
}
