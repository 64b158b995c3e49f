// Command coredns is CoreDNS with every stock plugin plus berth, which is
// placed in the directive order right after etcd: after cache, dnssec and
// transfer (so responses are cached and zones can be transferred), before
// loop and forward (so fallthrough reaches the upstream).
package main

import (
	"slices"

	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/core/plugin" // the stock plugins
	"github.com/coredns/coredns/coremain"

	_ "github.com/berthdns/berth/plugin"
)

func init() {
	i := slices.Index(dnsserver.Directives, "etcd")
	if i < 0 {
		panic("coredns: the etcd directive is missing; cannot place berth")
	}
	dnsserver.Directives = slices.Insert(dnsserver.Directives, i+1, "berth")
}

func main() { coremain.Run() }
