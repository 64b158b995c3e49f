package record

import (
	"crypto/sha256"
	"fmt"
	"strconv"
	"strings"
)

// Layout is a version of the key layout of the host index: where a reader
// finds which hosts exist and when one changed (README.md#consul-kv).
// Container documents live at the same keys in every layout.
//
//   - Layout 1: the host document at <prefix>/hosts/<host>. A reader holds
//     one blocking query on hosts/, so every change of any host costs every
//     reader the whole host list.
//   - Layout 2: the host document at <prefix>/shards/<ss>/<host>/<rev>, in
//     one of ShardCount shards chosen by the host's name. A reader holds one
//     keys-only blocking query per shard, so a change costs the names in
//     one shard and the changed host's own documents.
type Layout int

// The layouts a reader serves; writers choose theirs with WriteMode.
const (
	LayoutV1 Layout = 1
	LayoutV2 Layout = 2
)

// WriteMode is which layouts a writer keeps its host document in. Both
// serves readers of either during a migration (README.md#upgrading-the-kv-layout).
type WriteMode string

// The write modes.
const (
	WriteV1   WriteMode = "1"
	WriteV2   WriteMode = "2"
	WriteBoth WriteMode = "both"
)

// ParseWriteMode checks a mode given by an operator.
func ParseWriteMode(s string) (WriteMode, error) {
	switch m := WriteMode(s); m {
	case WriteV1, WriteV2, WriteBoth:
		return m, nil
	}
	return "", fmt.Errorf("kv layout %q: want 1, 2 or both", s)
}

// Writes reports whether the mode keeps the host document in layout l.
func (m WriteMode) Writes(l Layout) bool {
	return m == WriteBoth || m == WriteMode(strconv.Itoa(int(l)))
}

// ShardCount is the number of shards of layout 2. A reader holds one
// blocking query per shard: 64 stays well inside Consul's default limit of
// 200 HTTP connections per client address (limits.http_max_conns_per_client)
// with two CoreDNS servers on one agent, and at 10,000 hosts a shard holds
// some 160 names, about 6 KiB as a key list: less than one host's documents.
const ShardCount = 64

// Shard is the shard of host in layout 2: the first octet of the SHA-256 of
// its name modulo ShardCount, as two lower-case hex digits ("00" to "3f").
func Shard(host string) string {
	sum := sha256.Sum256([]byte(host))
	return fmt.Sprintf("%02x", sum[0]%ShardCount)
}

// Shards lists every shard name in order.
func Shards() []string {
	out := make([]string, ShardCount)
	for i := range out {
		out[i] = fmt.Sprintf("%02x", i)
	}
	return out
}

// ShardsPrefix is the key prefix of layout 2's whole host index.
func ShardsPrefix(prefix string) string { return prefix + "/shards/" }

// ShardPrefix is the key prefix of one shard.
func ShardPrefix(prefix, shard string) string { return ShardsPrefix(prefix) + shard + "/" }

// HostRevPrefix is the key prefix of host's entry in layout 2; the trailing
// slash keeps host "a" from matching host "ab".
func HostRevPrefix(prefix, host string) string {
	return ShardPrefix(prefix, Shard(host)) + host + "/"
}

// HostRevKey is the key of host's document at rev in layout 2. The rev is in
// the key, not only in the document, so that a keys-only listing of a shard
// says which host changed without carrying any document.
func HostRevKey(prefix, host string, rev uint64) string {
	return HostRevPrefix(prefix, host) + strconv.FormatUint(rev, 10)
}

// ParseHostRevKey splits <prefix>/shards/<ss>/<host>/<rev>. It refuses a
// key whose host is not a label, whose rev is not a decimal number, or
// which sits in a shard other than its host's.
func ParseHostRevKey(prefix, key string) (host string, rev uint64, err error) {
	rest, ok := strings.CutPrefix(key, ShardsPrefix(prefix))
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 3 {
		return "", 0, fmt.Errorf("key %s: not <prefix>/shards/<shard>/<host>/<rev>", key)
	}
	shard, host, revText := parts[0], parts[1], parts[2]
	if err := ValidLabel(host); err != nil {
		return "", 0, fmt.Errorf("key %s: host: %w", key, err)
	}
	if shard != Shard(host) {
		return "", 0, fmt.Errorf("key %s: host %s belongs in shard %s", key, host, Shard(host))
	}
	rev, err = strconv.ParseUint(revText, 10, 64)
	if err != nil || revText != strconv.FormatUint(rev, 10) {
		return "", 0, fmt.Errorf("key %s: rev %q is not a decimal number", key, revText)
	}
	return host, rev, nil
}
