package exporter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/consul/api"

	"github.com/berthdns/berth/record"
)

// Consul's limits on one transaction: 128 operations (Consul's
// maxTxnOps) and a 512 KiB request body (txn_max_req_len).
const (
	MaxTxnOps   = 128
	MaxTxnBytes = 512 << 10
)

// txnOverhead is a generous estimate of the JSON around one operation (verb,
// key and session field names, the session's UUID, index, flags), so that
// the estimated body size errs on the large side.
const txnOverhead = 160

// PublishStats counts what one Publish did.
type PublishStats struct {
	Sets    int // container documents written (created, changed or re-acquired)
	Deletes int // container documents deleted
	Txns    int // Consul transactions committed; each bumped the host's rev
}

// TxnError is a transaction Consul rolled back, typically because another
// writer changed the host document since it was read (the check-index
// failed) or a key is held by another session. The Publisher reloads the
// subtree from KV before its next attempt.
type TxnError struct {
	Errors api.TxnErrors
}

func (e *TxnError) Error() string {
	msgs := make([]string, 0, len(e.Errors))
	for _, te := range e.Errors {
		msgs = append(msgs, fmt.Sprintf("op %d: %s", te.OpIndex, te.What))
	}
	return "consul rolled the transaction back: " + strings.Join(msgs, "; ")
}

// Publisher makes one host's subtree of Consul KV — the host document and
// <prefix>/containers/<host>/ — equal to a desired state with the fewest
// writes. It remembers what it wrote (and reads KV once at the start, after
// a session change and after any failure), so an unchanged document costs
// neither a read nor a write. Every change is one or more transactions of at
// most MaxTxnOps operations and MaxTxnBytes bytes, each of which also bumps
// the host document's rev and checks the host document's ModifyIndex, so
// that a concurrent writer (a previous instance of the same exporter) makes
// it fail and reload instead of overwriting blindly. Every key is written
// with acquire under the given session.
//
// Concurrency: a Publisher is safe for concurrent use, but its calls are
// serialized; use one Publisher per host. Publishers for different hosts are
// independent and may run in parallel.
type Publisher struct {
	client   *api.Client
	prefix   string
	host     string
	exporter string
	maxOps   int
	maxBytes int
	loopback bool // loopback addresses may be published

	mu      sync.Mutex
	loaded  bool               // the fields below mirror KV
	session string             // the session the mirror is compared against
	hostIdx uint64             // ModifyIndex of the host key; 0: absent
	hostDoc []byte             // the host document as in KV
	hostOK  bool               // the host key is held by session
	rev     uint64             // the host document's rev
	docs    map[string]kvState // container id -> its key's value and holder
}

type kvState struct {
	value []byte
	held  bool // held by the mirror's session
}

// PublisherOption tunes a Publisher.
type PublisherOption func(*Publisher)

// WithExporterName sets the host document's exporter field (default
// "berth-exporter <Version>").
func WithExporterName(s string) PublisherOption { return func(p *Publisher) { p.exporter = s } }

// WithAllowLoopback lets Publish write loopback addresses (the operator's
// --allow-loopback); without it they are refused like the other classes
// record.Publishable refuses.
func WithAllowLoopback() PublisherOption { return func(p *Publisher) { p.loopback = true } }

// WithTxnLimits lowers the per-transaction limits (tests use it to force
// splitting); values outside 3..MaxTxnOps and 1..MaxTxnBytes are ignored.
func WithTxnLimits(ops, bytes int) PublisherOption {
	return func(p *Publisher) {
		if ops >= 3 && ops <= MaxTxnOps {
			p.maxOps = ops
		}
		if bytes > 0 && bytes <= MaxTxnBytes {
			p.maxBytes = bytes
		}
	}
}

// NewPublisher returns a Publisher for host's subtree under prefix. host
// must be a sanitized label (record.Label).
func NewPublisher(client *api.Client, prefix, host string, opts ...PublisherOption) (*Publisher, error) {
	if err := record.ValidLabel(host); err != nil {
		return nil, fmt.Errorf("host name: %w", err)
	}
	if prefix == "" || strings.HasPrefix(prefix, "/") || strings.HasSuffix(prefix, "/") {
		return nil, fmt.Errorf("prefix %q: must be non-empty, without leading or trailing /", prefix)
	}
	p := &Publisher{client: client, prefix: prefix, host: host,
		exporter: "berth-exporter " + Version, maxOps: MaxTxnOps, maxBytes: MaxTxnBytes - 16<<10}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

// Publish makes KV hold exactly desired (container id -> document) for this
// host, with addrs as the host's addresses, every key acquired by session.
// Documents must pass record validation and be keyed by their own ID, and
// every address must pass record.Publishable; anything else fails the call
// before anything is written. On error some
// transactions may have committed; calling Publish again converges.
func (p *Publisher) Publish(ctx context.Context, session string, addrs []netip.Addr, desired map[string]*record.Container) (PublishStats, error) {
	var st PublishStats
	if session == "" {
		return st, errors.New("publish: no session")
	}
	values := make(map[string][]byte, len(desired))
	for id, doc := range desired {
		if doc == nil || doc.ID != id {
			return st, fmt.Errorf("publish: document for %s has id %v", id, doc)
		}
		if err := doc.Validate(); err != nil {
			return st, fmt.Errorf("publish %s: %w", id, err)
		}
		for _, port := range doc.Ports {
			if err := record.Publishable(port.Addr, p.loopback); err != nil {
				return st, fmt.Errorf("publish %s, port %d/%s: %w", id, port.Port, port.Proto, err)
			}
		}
		b, err := json.Marshal(doc)
		if err != nil {
			return st, err
		}
		values[id] = b
	}
	for _, a := range addrs {
		if err := record.Publishable(a, p.loopback); err != nil {
			return st, fmt.Errorf("publish host document: %w", err)
		}
	}
	host := record.Host{V: record.Version, Name: p.host, Addrs: slices.Clone(addrs), Exporter: p.exporter}
	if err := host.Validate(); err != nil {
		return st, fmt.Errorf("publish host document: %w", err)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.loaded || p.session != session {
		if err := p.load(ctx, session); err != nil {
			return st, err
		}
	}

	// The diff: sets for new, changed or not-yet-acquired documents, deletes
	// for documents no longer desired. Sorted, so a split is deterministic.
	var ops []*api.KVTxnOp
	for _, id := range sortedKeys(values) {
		if cur, ok := p.docs[id]; ok && cur.held && bytes.Equal(cur.value, values[id]) {
			continue
		}
		ops = append(ops, &api.KVTxnOp{Verb: api.KVLock, Key: record.ContainerKey(p.prefix, p.host, id),
			Value: values[id], Session: session})
	}
	for _, id := range sortedKeys(p.docs) {
		if _, ok := values[id]; !ok {
			ops = append(ops, &api.KVTxnOp{Verb: api.KVDelete, Key: record.ContainerKey(p.prefix, p.host, id)})
		}
	}
	if len(ops) == 0 && p.hostOK && p.hostIdx != 0 && p.sameHost(host) {
		return st, nil
	}

	for _, chunk := range p.split(ops) {
		if err := p.commit(ctx, session, host, chunk, &st); err != nil {
			p.loaded = false
			return st, err
		}
	}
	return st, nil
}

// sameHost reports whether the host document in KV already says what h
// says, ignoring rev.
func (p *Publisher) sameHost(h record.Host) bool {
	h.Rev = p.rev
	b, _ := json.Marshal(h)
	return bytes.Equal(b, p.hostDoc)
}

// split cuts ops into transactions that leave room for the two host
// operations each carries. It returns one empty chunk when there are no
// container operations (the host document alone changes).
func (p *Publisher) split(ops []*api.KVTxnOp) [][]*api.KVTxnOp {
	chunks := [][]*api.KVTxnOp{nil}
	size := 0
	for _, op := range ops {
		n := txnOverhead + len(op.Key) + (len(op.Value)+2)/3*4 // values travel as base64
		last := len(chunks) - 1
		if len(chunks[last]) > 0 && (len(chunks[last])+1 > p.maxOps-2 || size+n > p.maxBytes-4096) {
			chunks = append(chunks, nil)
			last++
			size = 0
		}
		chunks[last] = append(chunks[last], op)
		size += n
	}
	return chunks
}

// commit runs one transaction: check the host document is as last seen,
// apply chunk, and write the host document with rev+1.
func (p *Publisher) commit(ctx context.Context, session string, host record.Host, chunk []*api.KVTxnOp, st *PublishStats) error {
	hostKey := record.HostKey(p.prefix, p.host)
	host.Rev = p.rev + 1
	hostDoc, err := json.Marshal(host)
	if err != nil {
		return err
	}
	guard := &api.KVTxnOp{Verb: api.KVCheckNotExists, Key: hostKey}
	if p.hostIdx != 0 {
		guard = &api.KVTxnOp{Verb: api.KVCheckIndex, Key: hostKey, Index: p.hostIdx}
	}
	txn := make(api.TxnOps, 0, len(chunk)+2)
	txn = append(txn, &api.TxnOp{KV: guard})
	for _, op := range chunk {
		txn = append(txn, &api.TxnOp{KV: op})
	}
	txn = append(txn, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVLock, Key: hostKey, Value: hostDoc, Session: session}})

	ok, resp, _, err := p.client.Txn().Txn(txn, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("consul transaction: %w", err)
	}
	if !ok {
		return &TxnError{Errors: resp.Errors}
	}

	for _, op := range chunk {
		id := op.Key[strings.LastIndexByte(op.Key, '/')+1:]
		if op.Verb == api.KVDelete {
			delete(p.docs, id)
			st.Deletes++
		} else {
			p.docs[id] = kvState{value: op.Value, held: true}
			st.Sets++
		}
	}
	for _, r := range resp.Results {
		if r.KV != nil && r.KV.Key == hostKey && r.KV.ModifyIndex > p.hostIdx {
			p.hostIdx = r.KV.ModifyIndex
		}
	}
	p.hostDoc, p.hostOK, p.rev = hostDoc, true, host.Rev
	st.Txns++
	return nil
}

// load mirrors the host's subtree from KV.
func (p *Publisher) load(ctx context.Context, session string) error {
	q := (&api.QueryOptions{}).WithContext(ctx)
	kv := p.client.KV()
	hostPair, _, err := kv.Get(record.HostKey(p.prefix, p.host), q)
	if err != nil {
		return fmt.Errorf("read host document: %w", err)
	}
	pairs, _, err := kv.List(record.ContainersPrefix(p.prefix, p.host), q)
	if err != nil {
		return fmt.Errorf("read container documents: %w", err)
	}
	p.session, p.hostIdx, p.hostDoc, p.hostOK = session, 0, nil, false
	if hostPair != nil {
		p.hostIdx, p.hostDoc, p.hostOK = hostPair.ModifyIndex, hostPair.Value, hostPair.Session == session
		// Keep rev rising across restarts; a document we cannot read
		// restarts it from its ModifyIndex, which is larger than any rev
		// a reader may remember for it.
		if h, err := record.DecodeHost(hostPair.Key, hostPair.Value); err == nil {
			p.rev = max(p.rev, h.Rev)
		} else {
			p.rev = max(p.rev, hostPair.ModifyIndex)
		}
	}
	p.docs = make(map[string]kvState, len(pairs))
	for _, kv := range pairs {
		// Every key in the subtree is mirrored, even one that is not
		// <prefix>/containers/<host>/<id>: it is not desired, so it is
		// deleted (ContainerKey rebuilds the same key from the remainder).
		id := strings.TrimPrefix(kv.Key, record.ContainersPrefix(p.prefix, p.host))
		p.docs[id] = kvState{value: kv.Value, held: kv.Session == session}
	}
	p.loaded = true
	return nil
}

// Deregister deletes the host's subtree, for a clean shutdown that should
// not wait for the session to expire.
func (p *Publisher) Deregister(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.loaded = false
	txn := api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: record.HostKey(p.prefix, p.host)}},
		{KV: &api.KVTxnOp{Verb: api.KVDeleteTree, Key: record.ContainersPrefix(p.prefix, p.host)}},
	}
	ok, resp, _, err := p.client.Txn().Txn(txn, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("deregister: %w", err)
	}
	if !ok {
		return &TxnError{Errors: resp.Errors}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
