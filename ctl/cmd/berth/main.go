// Command berth shows and checks Berth's namespace in Consul KV: its
// services, hosts and what the plugin would leave out, the ACL policies of
// its parts, what a client would dial, and a live web page. See
// ctl/README.md.
//
// Exit status: 0 success, --help, --version; 1 when berth check finds
// something the zone would leave out (also: ls names no such service,
// resolve finds nothing to dial); 2 for a bad command line or a Consul
// error.
package main

import (
	"os"

	"github.com/berthdns/berth/ctl"
)

func main() {
	os.Exit(ctl.Run(os.Args[1:], os.Stdout, os.Stderr))
}
