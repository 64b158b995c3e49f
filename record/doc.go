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
// policy.go holds the ownership policy (<prefix>/policy): which hosts may
// claim which names (Claim) and publish which addresses (Address), and the
// policies of no document (OpenPolicy) and of one that does not validate
// (ClosedPolicy: no claim, no address).
// record.go also holds the TXT encoding of free text (EscapeTXT): a TXT
// string carries exactly its document field's bytes.
//
// addrclass.go holds the one rule of which addresses may be published
// (Publishable): never loopback without the operator's opt-in, link-local,
// multicast, unspecified or cloud metadata ones (MetadataPrefixes, with
// their sources), nor any in an operator's DenyList.
package record
