package record

import "fmt"

// ExporterACL is the Consul ACL policy an exporter needs for host, from the
// key layout this package owns: its own host document in both layouts (so
// that one policy serves every --kv-layout, WriteMode), its own container
// prefix (the trailing slashes of that and of HostRevPrefix keep host "h1"
// from writing "h10"'s records), and the catalog node and sessions named
// after the host, where its session lives. It may not write any other key
// (the ownership policy among them), nor touch another exporter's session
// (which, with behavior=delete, would delete that host's records).
func ExporterACL(prefix, host string) string {
	return fmt.Sprintf(`key %q {
  policy = "write"
}
key_prefix %q {
  policy = "write"
}
key_prefix %q {
  policy = "write"
}
node %q {
  policy = "write"
}
session %q {
  policy = "write"
}
`, HostKey(prefix, host), HostRevPrefix(prefix, host), ContainersPrefix(prefix, host), host, host)
}

// PluginACL is the read-only Consul ACL policy of Berth's CoreDNS plugin:
// the whole prefix, the ownership policy included.
func PluginACL(prefix string) string {
	return fmt.Sprintf(`key_prefix %q {
  policy = "read"
}
`, prefix+"/")
}
