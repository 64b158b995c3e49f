package berth

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/berthdns/berth/internal/readbound"
	"github.com/berthdns/berth/record"
	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
)

// consulRequestTimeout cuts off every request to Consul: just above the
// blocking query's wait, to which Consul adds up to wait/16 of jitter.
const consulRequestTimeout = watchWait + watchWait/16 + 3*time.Second

// newConsulClient builds the Consul client with a timeout just above the
// blocking query's wait, whose transport counts response bytes by request
// kind and enforces a request's byte limit (see withRequest).
func newConsulClient(cfg *api.Config) (*api.Client, error) {
	if cfg.Transport != nil {
		// One connection per blocking query (layout 1's list and every
		// shard) and per fetch in flight stays open between reads rather
		// than being closed and dialled again at each change.
		cfg.Transport.MaxIdleConnsPerHost = record.ShardCount + 1 + fetchParallel + 2
		// Compressing a response costs Consul and us CPU and saves only
		// loopback bandwidth when the agent is on this machine, as the
		// README deploys it.
		cfg.Transport.DisableCompression = onThisMachine(cfg.Address)
	}
	hc, err := api.NewHttpClient(cfg.Transport, cfg.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	hc.Transport = countingTransport{next: hc.Transport}
	hc.Timeout = consulRequestTimeout
	cfg.HttpClient = hc
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	return client, nil
}

// onThisMachine reports whether a Consul address is a loopback one or a
// Unix socket.
func onThisMachine(addr string) bool {
	if strings.HasPrefix(addr, "unix://") {
		return true
	}
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		addr = u.Host
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Kinds of Consul request, the label of consulBytes.
const (
	requestWatch  = "watch"  // layout 1's host list
	requestShard  = "shard"  // one shard of layout 2's host index (keys only)
	requestHost   = "host"   // one host's documents
	requestPolicy = "policy" // the ownership policy
)

// consulRequest says what a Consul request reads, and bounds its response.
type consulRequest struct {
	kind     string
	maxBytes int64 // 0: no bound
	read     int64 // bytes of the response read
	exceeded bool  // set when the response passed maxBytes
}

type requestKey struct{}

// withRequest tags ctx's Consul requests with r, which the transport counts
// under r.kind and cuts off after r.maxBytes: a host's subtree is bounded
// while it is read, not after a hostile one was downloaded whole.
func withRequest(ctx context.Context, r *consulRequest) context.Context {
	return context.WithValue(ctx, requestKey{}, r)
}

// countingTransport counts every Consul request and the bytes of its
// response, so that the cost of a change or a load can be read off
// coredns_berth_consul_requests_total and _received_bytes_total, and
// enforces the request's byte bound.
type countingTransport struct{ next http.RoundTripper }

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r, _ := req.Context().Value(requestKey{}).(*consulRequest)
	if r == nil {
		r = &consulRequest{kind: requestWatch}
	}
	consulRequests.WithLabelValues(r.kind).Inc()
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, counter: consulBytes.WithLabelValues(r.kind), req: r}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	counter prometheus.Counter
	req     *consulRequest
}

func (b *countingBody) Read(p []byte) (int, error) {
	before := b.req.read
	n, err := readbound.Read(b.ReadCloser, p, b.req.maxBytes, &b.req.read, &b.req.exceeded)
	b.counter.Add(float64(b.req.read - before))
	return n, err
}
