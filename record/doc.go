// Package record owns the Consul KV contract between the exporter and the
// CoreDNS plugin (README.md#consul-kv): the host and container documents, the key
// layout under the prefix, the label sanitizing rules, and the validation
// every reader applies before it trusts a document.
//
// Writers sanitize and build documents with this package; readers decode
// with DecodeHost and DecodeContainer, which reject anything that would
// produce a bad DNS answer.
//
// layout.go holds the KV layouts of the host index (layout 1's host list,
// layout 2's shards with the rev in the key) and the writers' modes.
//
// addrclass.go holds the one rule of which addresses may be published
// (Publishable): never loopback without the operator's opt-in, link-local,
// multicast, unspecified or cloud metadata ones (MetadataPrefixes, with
// their sources), nor any in an operator's DenyList.
package record
