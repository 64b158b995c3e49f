package ctl

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/consul/api"

	"github.com/berthdns/berth/internal/readbound"
	"github.com/berthdns/berth/record"
)

// ProblemOversize is a host whose documents are over the readers' bound
// (record.MaxHostBytes, record.MaxHostEntryBytes): the plugin keeps what it
// served for it, and berth shows none of its documents.
const ProblemOversize = "oversize"

// readParallel bounds the per-host reads of ReadBounded in flight, as the
// plugin's fetchParallel does its own.
const readParallel = 8

// newConsulClient is the Consul client of api.DefaultConfig (CONSUL_HTTP_ADDR
// and the other CONSUL_* variables) whose responses can be cut off at a
// bound (withReadBound).
func newConsulClient() (*api.Client, error) {
	cfg := api.DefaultConfig()
	hc, err := api.NewHttpClient(cfg.Transport, cfg.TLSConfig)
	if err != nil {
		return nil, err
	}
	hc.Transport = boundedTransport{next: hc.Transport}
	cfg.HttpClient = hc
	return api.NewClient(cfg)
}

// readBound is one request's byte bound and what it read.
type readBound struct {
	max, read int64
	exceeded  bool
}

type readBoundKey struct{}

// withReadBound makes ctx's Consul requests stop reading their response past
// b.max (a client made by newConsulClient): a hostile host's documents are
// cut off while they are read, not after they were held whole.
func withReadBound(ctx context.Context, b *readBound) context.Context {
	return context.WithValue(ctx, readBoundKey{}, b)
}

type boundedTransport struct{ next http.RoundTripper }

func (t boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if b, _ := req.Context().Value(readBoundKey{}).(*readBound); err == nil && b != nil {
		resp.Body = &boundedBody{ReadCloser: resp.Body, b: b}
	}
	return resp, err
}

type boundedBody struct {
	io.ReadCloser
	b *readBound
}

func (r *boundedBody) Read(p []byte) (int, error) {
	return readbound.Read(r.ReadCloser, p, r.b.max, &r.b.read, &r.b.exceeded)
}

// ReadBounded reads the namespace as the plugin does, each host on its own
// and within the plugin's bounds: the prefix's keys (without values), then
// per host its layout 2 entry and layout 1 key (record.MaxHostEntryBytes)
// and its container documents (record.MaxHostBytes). A host over a bound
// is a ProblemOversize and none of its documents is kept. It returns the
// pairs read, for their ModifyIndex. client must come from newConsulClient
// for the bounds to hold.
func ReadBounded(ctx context.Context, client *api.Client, prefix string) (*Namespace, api.KVPairs, error) {
	kv := client.KV()
	keys, meta, err := kv.Keys(prefix+"/", "", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, nil, fmt.Errorf("consul: list %s/: %w", prefix, err)
	}
	var pairs api.KVPairs
	hosts := map[string][]string{} // host -> the prefixes and keys of its documents
	for _, k := range keys {
		switch {
		case k == record.PolicyKey(prefix):
			hosts[""] = append(hosts[""], k)
		case strings.HasPrefix(k, record.ShardsPrefix(prefix)):
			name, _, err := record.ParseHostRevKey(prefix, k)
			if err != nil {
				pairs = append(pairs, &api.KVPair{Key: k}) // Decode reports the key itself
				continue
			}
			hosts[name] = appendOnce(hosts[name], record.HostRevPrefix(prefix, name))
		case strings.HasPrefix(k, record.HostsPrefix(prefix)):
			name := strings.TrimPrefix(k, record.HostsPrefix(prefix))
			hosts[name] = appendOnce(hosts[name], k)
		case strings.HasPrefix(k, record.AllContainersPrefix(prefix)):
			name, _, _ := strings.Cut(strings.TrimPrefix(k, record.AllContainersPrefix(prefix)), "/")
			hosts[name] = appendOnce(hosts[name], record.ContainersPrefix(prefix, name))
		}
	}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
		oversize []Problem
	)
	sem := make(chan struct{}, readParallel)
	for name, reads := range hosts {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			got, over, err := readHost(ctx, kv, prefix, reads)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil && firstErr == nil:
				firstErr = err
			case over != "":
				oversize = append(oversize, Problem{Reason: ProblemOversize, Host: name, Key: over,
					Why: fmt.Sprintf("the host's documents are over the read bound (%d KiB of containers, %d KiB of its own document): not read, as the plugin does not read them",
						record.MaxHostBytes>>10, record.MaxHostEntryBytes>>10)})
			default:
				pairs = append(pairs, got...)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, nil, firstErr
	}
	ns := Decode(prefix, pairs)
	ns.Index = meta.LastIndex
	ns.Problems = append(ns.Problems, oversize...)
	slices.SortFunc(ns.Problems, func(a, b Problem) int { return strings.Compare(a.Key, b.Key) })
	return ns, pairs, nil
}

func appendOnce(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// readHost reads one host's documents: each of reads is a prefix (ending
// in "/": listed) or a key, read within its bound. over is the first one
// over its bound ("" for none).
func readHost(ctx context.Context, kv *api.KV, prefix string, reads []string) (pairs api.KVPairs, over string, err error) {
	for _, r := range reads {
		b := &readBound{max: record.MaxHostEntryBytes}
		if strings.HasPrefix(r, record.AllContainersPrefix(prefix)) {
			b.max = record.MaxHostBytes
		}
		q := (&api.QueryOptions{}).WithContext(withReadBound(ctx, b))
		var got api.KVPairs
		if strings.HasSuffix(r, "/") {
			got, _, err = kv.List(r, q)
		} else {
			var p *api.KVPair
			if p, _, err = kv.Get(r, q); p != nil {
				got = api.KVPairs{p}
			}
		}
		switch {
		case b.exceeded:
			return nil, r, nil
		case err != nil:
			return nil, "", fmt.Errorf("consul: read %s: %w", r, err)
		}
		pairs = append(pairs, got...)
	}
	return pairs, "", nil
}
