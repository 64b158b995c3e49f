package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/consul/api"

	"github.com/berthdns/berth/record"
)

// aclPolicy is `berth policy -o json`: the body Consul's PUT
// /v1/acl/policy takes, so the output can be sent to it as it is.
type aclPolicy struct {
	Name        string
	Description string
	Rules       string
}

// runPolicy prints the ACL policy of host's exporter, or the plugin's; or,
// given a verb and a file, checks or applies an ownership policy document
// (policyDocument). One argument is always a host, so that a host named
// check or apply keeps its ACL policy.
func runPolicy(ctx context.Context, o *options, stdout, stderr io.Writer) int {
	if len(o.args) == 2 && !o.plugin {
		return policyDocument(ctx, o, stdout, stderr)
	}
	if o.index >= 0 {
		fmt.Fprintln(stderr, "berth policy: --index is apply's")
		return 2
	}
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
		fmt.Fprintln(stderr, "berth policy: give one HOST, --plugin alone, or check|apply FILE")
		return 2
	}
	if o.output == "json" {
		writeJSON(stdout, p)
	} else {
		fmt.Fprint(stdout, p.Rules)
	}
	return 0
}

// policyCheck is `berth policy check|apply FILE -o json`.
type policyCheck struct {
	File    string `json:"file"`
	Valid   bool   `json:"valid"`
	Error   string `json:"error,omitempty"`
	Rules   int    `json:"rules"`
	Default string `json:"default,omitempty"`
	// Addresses is the number of address rules (hosts bound to ranges).
	Addresses int `json:"addresses"`
	// Key, Index and Was are apply's: the key written, its ModifyIndex
	// after and before (0: there was no document).
	Key   string `json:"key,omitempty"`
	Index uint64 `json:"index,omitempty"`
	Was   uint64 `json:"was,omitempty"`
}

// policyDocument is `berth policy check FILE` and `berth policy apply
// FILE`: the document is decoded and validated as the plugin does
// (record.DecodePolicy), and apply writes it only if it validates, with a
// check-and-set on the ModifyIndex it read (or --index), so that a document
// the plugin would refuse (record.ClosedPolicy: no claim, no address) never
// reaches KV this way, nor overwrites a change made meanwhile. FILE "-" is
// the standard input. Exit 1: the document does not validate, or the key
// changed; 2: the file or Consul could not be read, or a bad command line.
func policyDocument(ctx context.Context, o *options, stdout, stderr io.Writer) int {
	verb, file := o.args[0], o.args[1]
	if verb != "check" && verb != "apply" {
		fmt.Fprintf(stderr, "berth policy: %q: give check FILE or apply FILE\n", verb)
		return 2
	}
	if verb == "check" && o.index >= 0 {
		fmt.Fprintln(stderr, "berth policy check: --index is apply's")
		return 2
	}
	value, err := readPolicyFile(file)
	if err != nil {
		fmt.Fprintf(stderr, "berth policy %s: %v\n", verb, err)
		return 2
	}
	key := record.PolicyKey(o.prefix)
	rep := policyCheck{File: file}
	pol, err := record.DecodePolicy(file, value)
	if err != nil {
		rep.Error = err.Error()
		writePolicyCheck(o, stdout, rep)
		written := ""
		if verb == "apply" {
			written = "; nothing written"
		}
		fmt.Fprintf(stderr, "berth policy %s: %v: the plugin would serve no service name, alias or address under it%s\n", verb, err, written)
		return 1
	}
	rep.Valid, rep.Rules, rep.Default, rep.Addresses = true, len(pol.Rules), pol.Default, len(pol.Addresses)
	if verb == "check" {
		writePolicyCheck(o, stdout, rep)
		return 0
	}
	client, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		fmt.Fprintf(stderr, "berth policy apply: consul: %v\n", err)
		return 2
	}
	rctx, cancel := context.WithTimeout(ctx, consulTimeout)
	defer cancel()
	rep.Key = key
	rep.Was, rep.Index, err = casPolicy(rctx, client.KV(), key, value, o.index)
	if err != nil {
		fmt.Fprintf(stderr, "berth policy apply: %v\n", err)
		if lost := (*casLost)(nil); errors.As(err, &lost) {
			return 1
		}
		return 2
	}
	writePolicyCheck(o, stdout, rep)
	return 0
}

// casLost is a check-and-set that found the key changed: nothing written.
type casLost struct {
	key       string
	at, want  uint64
	meanwhile bool // changed between apply's read and its write
}

func (e *casLost) Error() string {
	if e.meanwhile {
		return fmt.Sprintf("%s changed while it was being written (it was at index %d); nothing written: check it and apply again", e.key, e.at)
	}
	return fmt.Sprintf("%s is at index %d, not %d (--index): it changed since; nothing written", e.key, e.at, e.want)
}

// casPolicy writes value at key if the key's ModifyIndex is want (-1: the
// one it reads now; 0: only if there is no document), and returns the
// index before and after.
func casPolicy(ctx context.Context, kv *api.KV, key string, value []byte, want int64) (was, now uint64, err error) {
	q := (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx)
	cur, _, err := kv.Get(key, q)
	if err != nil {
		return 0, 0, fmt.Errorf("consul: get %s: %w", key, err)
	}
	if cur != nil {
		was = cur.ModifyIndex
	}
	if want >= 0 && uint64(want) != was {
		return was, 0, &casLost{key: key, at: was, want: uint64(want)}
	}
	ok, _, err := kv.CAS(&api.KVPair{Key: key, Value: value, ModifyIndex: was}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return was, 0, fmt.Errorf("consul: write %s: %w", key, err)
	}
	if !ok {
		return was, 0, &casLost{key: key, at: was, meanwhile: true}
	}
	cur, _, err = kv.Get(key, q)
	if err != nil || cur == nil {
		return was, 0, fmt.Errorf("consul: %s written, but reading it back failed: %v", key, err)
	}
	return was, cur.ModifyIndex, nil
}

// readPolicyFile reads FILE ("-": the standard input), at most one byte
// more than a document may have, so that DecodePolicy reports one too large
// without the whole of it read.
func readPolicyFile(file string) ([]byte, error) {
	f := os.Stdin
	if file != "-" {
		var err error
		if f, err = os.Open(file); err != nil {
			return nil, err
		}
		defer f.Close()
	}
	b, err := io.ReadAll(io.LimitReader(f, record.MaxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return b, nil
}

func writePolicyCheck(o *options, stdout io.Writer, r policyCheck) {
	switch {
	case o.output == "json":
		writeJSON(stdout, r)
	case !r.Valid:
	case r.Key != "":
		fmt.Fprintf(stdout, "%s: written at index %d (was %d): %s\n", r.Key, r.Index, r.Was, policySummary(r))
	default:
		fmt.Fprintf(stdout, "%s: valid: %s\n", r.File, policySummary(r))
	}
}

func policySummary(r policyCheck) string {
	return fmt.Sprintf("%s, default %s, %s", plural(r.Rules, "rule"), r.Default, plural(r.Addresses, "address rule"))
}
