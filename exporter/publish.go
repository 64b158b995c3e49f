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

// Publisher makes one host's subtree of Consul KV — the host document, in
// the layouts its WriteMode names (record/layout.go), and
// <prefix>/containers/<host>/ — equal to a desired state with the fewest
// writes. It remembers what it wrote (and reads KV once at the start, after
// a session change and after any failure), so an unchanged document costs
// neither a read nor a write. Every change is one or more transactions of at
// most MaxTxnOps operations and MaxTxnBytes bytes, each of which also bumps
// the host document's rev and checks the host document's keys in both
// layouts against their last seen ModifyIndex (or absence), so that a
// concurrent writer (a previous instance of the same exporter) makes it fail
// and reload instead of overwriting blindly. The same transaction deletes
// the host's keys of a layout the mode does not write, so that a change of
// mode never leaves a Consul index at which the host is in no layout. Every
// key is written with acquire under the given session.
//
// Concurrency: a Publisher is safe for concurrent use, but its calls are
// serialized; use one Publisher per host. Publishers for different hosts are
// independent and may run in parallel.
type Publisher struct {
	client   *api.Client
	prefix   string
	host     string
	exporter string
	mode     record.WriteMode
	maxOps   int
	maxBytes int
	loopback bool // loopback addresses may be published

	mu      sync.Mutex
	loaded  bool   // the fields below mirror KV
	session string // the session the mirror is compared against
	rev     uint64 // the highest rev seen in either layout
	v1      hostKeyState
	// v2 is the host's key in layout 2 with the highest rev; v2Keys every
	// key under its record.HostRevPrefix (key -> ModifyIndex), that one and
	// any stale ones, which the next transaction deletes.
	v2     hostKeyState
	v2Keys map[string]uint64
	docs   map[string]kvState // container id -> its key's value and holder
}

// hostKeyState is one host document key as in KV.
type hostKeyState struct {
	key string // "": absent
	idx uint64 // its ModifyIndex
	doc []byte
	rev uint64 // the rev its document says it is
	ok  bool   // held by the mirror's session
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

// WithKVLayout sets the layouts the host document is kept in (the
// operator's --kv-layout; default record.WriteBoth, which every reader,
// old or new, understands). A mode that is not valid is ignored.
func WithKVLayout(m record.WriteMode) PublisherOption {
	return func(p *Publisher) {
		if _, err := record.ParseWriteMode(string(m)); err == nil {
			p.mode = m
		}
	}
}

// hostOpsMax is the most host operations a transaction carries when the
// host has at most one key per layout: two guards, a delete and two locks.
const hostOpsMax = 5

// WithTxnLimits lowers the per-transaction limits (tests use it to force
// splitting); values outside hostOpsMax+1..MaxTxnOps and 1..MaxTxnBytes are
// ignored.
func WithTxnLimits(ops, bytes int) PublisherOption {
	return func(p *Publisher) {
		if ops > hostOpsMax && ops <= MaxTxnOps {
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
	p := &Publisher{client: client, prefix: prefix, host: host, mode: record.WriteBoth,
		exporter: "berth-exporter " + Version, maxOps: MaxTxnOps, maxBytes: MaxTxnBytes - 16<<10}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

// Mode is the write mode the Publisher keeps the host document in.
func (p *Publisher) Mode() record.WriteMode { return p.mode }

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
	if len(ops) == 0 && p.hostUpToDate(host) {
		return st, nil
	}

	// After the first transaction the host has its keys of the mode, so a
	// later one may carry more host operations than the first: reserve the
	// most either needs.
	for _, chunk := range p.split(ops, max(p.hostOps(), hostOpsMax)) {
		if err := p.commit(ctx, session, host, chunk, &st); err != nil {
			p.loaded = false
			return st, err
		}
	}
	return st, nil
}

// hostUpToDate reports whether the host document is, in exactly the
// layouts of the mode, held by the session and saying what h says (rev
// aside), with no stale key of the host in any layout.
func (p *Publisher) hostUpToDate(h record.Host) bool {
	same := func(k hostKeyState) bool {
		if k.key == "" || !k.ok {
			return false
		}
		h.Rev = k.rev
		b, _ := json.Marshal(h)
		return bytes.Equal(b, k.doc)
	}
	if p.mode.Writes(record.LayoutV1) != same(p.v1) || !p.mode.Writes(record.LayoutV1) && p.v1.key != "" {
		return false
	}
	if p.mode.Writes(record.LayoutV2) {
		return same(p.v2) && len(p.v2Keys) == 1
	}
	return len(p.v2Keys) == 0
}

// hostOps is the number of host operations the next transaction carries:
// a guard per layout, a delete per key to go, a lock per layout of the mode.
func (p *Publisher) hostOps() int {
	n := 2 + len(p.v2Keys)
	if p.v1.key != "" && !p.mode.Writes(record.LayoutV1) {
		n++
	}
	if p.mode.Writes(record.LayoutV1) {
		n++
	}
	if p.mode.Writes(record.LayoutV2) {
		n++
	}
	return n
}

// split cuts ops into transactions that leave room for the reserve host
// operations each carries, in count and in bytes (2 KiB each, a host
// document being far smaller). It returns one empty chunk when there are no
// container operations (the host document alone changes).
func (p *Publisher) split(ops []*api.KVTxnOp, reserve int) [][]*api.KVTxnOp {
	chunks := [][]*api.KVTxnOp{nil}
	size := 0
	for _, op := range ops {
		n := txnOverhead + len(op.Key) + (len(op.Value)+2)/3*4 // values travel as base64
		last := len(chunks) - 1
		if len(chunks[last]) > 0 && (len(chunks[last])+1 > p.maxOps-reserve || size+n > p.maxBytes-2048*reserve) {
			chunks = append(chunks, nil)
			last++
			size = 0
		}
		chunks[last] = append(chunks[last], op)
		size += n
	}
	return chunks
}

// commit runs one transaction: check the host's keys in both layouts are
// as last seen, apply chunk, write the host document with rev+1 in the
// layouts of the mode and delete the host's other keys.
func (p *Publisher) commit(ctx context.Context, session string, host record.Host, chunk []*api.KVTxnOp, st *PublishStats) error {
	host.Rev = p.rev + 1
	hostDoc, err := json.Marshal(host)
	if err != nil {
		return err
	}
	v1Key, v2Key := record.HostKey(p.prefix, p.host), record.HostRevKey(p.prefix, p.host, host.Rev)
	txn := make(api.TxnOps, 0, len(chunk)+p.hostOps())
	kvOp := func(op *api.KVTxnOp) { txn = append(txn, &api.TxnOp{KV: op}) }

	// The guards: a concurrent writer changed, created or deleted one of
	// the host's keys since load if either fails.
	if p.v1.key != "" {
		kvOp(&api.KVTxnOp{Verb: api.KVCheckIndex, Key: v1Key, Index: p.v1.idx})
	} else {
		kvOp(&api.KVTxnOp{Verb: api.KVCheckNotExists, Key: v1Key})
	}
	if p.v2.key != "" {
		kvOp(&api.KVTxnOp{Verb: api.KVCheckIndex, Key: p.v2.key, Index: p.v2.idx})
	} else {
		kvOp(&api.KVTxnOp{Verb: api.KVCheckNotExists, Key: v2Key})
	}
	for _, op := range chunk {
		kvOp(op)
	}
	if p.v1.key != "" && !p.mode.Writes(record.LayoutV1) {
		kvOp(&api.KVTxnOp{Verb: api.KVDelete, Key: v1Key})
	}
	for _, k := range sortedKeys(p.v2Keys) {
		kvOp(&api.KVTxnOp{Verb: api.KVDelete, Key: k})
	}
	if p.mode.Writes(record.LayoutV1) {
		kvOp(&api.KVTxnOp{Verb: api.KVLock, Key: v1Key, Value: hostDoc, Session: session})
	}
	if p.mode.Writes(record.LayoutV2) {
		kvOp(&api.KVTxnOp{Verb: api.KVLock, Key: v2Key, Value: hostDoc, Session: session})
	}

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
	// The locks' results carry the keys' new ModifyIndex; the guards' the
	// old one, hence the largest.
	written := func(key string) hostKeyState {
		k := hostKeyState{key: key, doc: hostDoc, rev: host.Rev, ok: true}
		for _, r := range resp.Results {
			if r.KV != nil && r.KV.Key == key {
				k.idx = max(k.idx, r.KV.ModifyIndex)
			}
		}
		return k
	}
	p.v1, p.v2, p.v2Keys = hostKeyState{}, hostKeyState{}, map[string]uint64{}
	if p.mode.Writes(record.LayoutV1) {
		p.v1 = written(v1Key)
	}
	if p.mode.Writes(record.LayoutV2) {
		p.v2 = written(v2Key)
		p.v2Keys[v2Key] = p.v2.idx
	}
	p.rev = host.Rev
	st.Txns++
	return nil
}

// load mirrors the host's subtree from KV: its key in layout 1, every key
// under its prefix in layout 2, and its container documents.
func (p *Publisher) load(ctx context.Context, session string) error {
	q := (&api.QueryOptions{}).WithContext(ctx)
	kv := p.client.KV()
	hostPair, _, err := kv.Get(record.HostKey(p.prefix, p.host), q)
	if err != nil {
		return fmt.Errorf("read host document: %w", err)
	}
	revPairs, _, err := kv.List(record.HostRevPrefix(p.prefix, p.host), q)
	if err != nil {
		return fmt.Errorf("read host documents of layout 2: %w", err)
	}
	pairs, _, err := kv.List(record.ContainersPrefix(p.prefix, p.host), q)
	if err != nil {
		return fmt.Errorf("read container documents: %w", err)
	}
	p.session, p.v1, p.v2, p.v2Keys = session, hostKeyState{}, hostKeyState{}, map[string]uint64{}
	// Keep rev rising across restarts and changes of mode: the largest rev
	// any key or document says. A document we cannot read restarts it from
	// its ModifyIndex, which is larger than any rev a reader may remember.
	mirror := func(pair *api.KVPair, keyRev uint64) hostKeyState {
		k := hostKeyState{key: pair.Key, idx: pair.ModifyIndex, doc: pair.Value, ok: pair.Session == session, rev: keyRev}
		if h, err := record.DecodeHost(pair.Key, pair.Value); err == nil {
			k.rev = h.Rev
			p.rev = max(p.rev, h.Rev, keyRev)
		} else {
			k.doc = nil // never up to date
			p.rev = max(p.rev, pair.ModifyIndex, keyRev)
		}
		return k
	}
	if hostPair != nil {
		p.v1 = mirror(hostPair, 0)
	}
	for _, pair := range revPairs {
		// Every key under the host's prefix is mirrored, so that the next
		// write deletes all but its own; the one with the highest rev is
		// the host's document, the one the guard checks.
		p.v2Keys[pair.Key] = pair.ModifyIndex
		host, rev, err := record.ParseHostRevKey(p.prefix, pair.Key)
		if err != nil || host != p.host {
			continue
		}
		if p.v2.key == "" || rev > p.v2.rev {
			p.v2 = mirror(pair, rev)
			p.v2.rev = rev // a document whose rev disagrees with its key is not up to date
		}
	}
	if p.v2.key != "" {
		if h, err := record.DecodeHost(p.v2.key, p.v2.doc); err != nil || h.Rev != p.v2.rev {
			p.v2.doc = nil
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

// Deregister deletes the host's subtree in both layouts, for a clean
// shutdown that should not wait for the session to expire.
func (p *Publisher) Deregister(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.loaded = false
	txn := api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: record.HostKey(p.prefix, p.host)}},
		{KV: &api.KVTxnOp{Verb: api.KVDeleteTree, Key: record.HostRevPrefix(p.prefix, p.host)}},
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
