// Package record owns the Consul KV contract between the exporter and the
// CoreDNS plugin (namespace v1): the host and container documents, the key
// layout under the prefix, the label sanitizing rules, and the validation
// every reader applies before it trusts a document.
//
// Writers sanitize and build documents with this package; readers decode
// with DecodeHost and DecodeContainer, which reject anything that would
// produce a bad DNS answer.
package record
