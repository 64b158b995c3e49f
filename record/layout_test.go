package record

import (
	"fmt"
	"slices"
	"testing"
)

// TestShard pins Shard (the values are sha256sum's first octet modulo 64): a change of the hash would move every host of a
// running fleet to another shard, which readers and writers of different
// versions would then disagree on.
func TestShard(t *testing.T) {
	for host, want := range map[string]string{"h1": "33", "web-1": "04", "docker-host": "3a", "a": "0a"} {
		if got := Shard(host); got != want {
			t.Errorf("Shard(%q) = %s, want %s", host, got, want)
		}
	}
	shards := Shards()
	if len(shards) != ShardCount || shards[0] != "00" || shards[ShardCount-1] != "3f" || !slices.IsSorted(shards) {
		t.Fatalf("Shards() = %v", shards)
	}
	count := map[string]int{}
	const n = 10000
	for i := range n {
		s := Shard(fmt.Sprintf("host-%d", i))
		if _, ok := slices.BinarySearch(shards, s); !ok {
			t.Fatalf("Shard(host-%d) = %s, not in Shards()", i, s)
		}
		count[s]++
	}
	// 10,000 names over 64 shards: some 156 each; a fair hash stays well
	// within half to twice that.
	if len(count) != ShardCount {
		t.Errorf("10,000 names fill %d shards, want %d", len(count), ShardCount)
	}
	for s, c := range count {
		if c < n/ShardCount/2 || c > 2*n/ShardCount {
			t.Errorf("shard %s holds %d of %d names", s, c, n)
		}
	}
}

// TestHostRevKey proves HostRevKey and ParseHostRevKey round-trip and that
// ParseHostRevKey refuses every key that is not one of them.
func TestHostRevKey(t *testing.T) {
	for _, tc := range []struct {
		host string
		rev  uint64
	}{{"h1", 0}, {"h1", 1}, {"web-1", 42}, {"a", 1<<64 - 1}} {
		key := HostRevKey("berth/x", tc.host, tc.rev)
		want := "berth/x/shards/" + Shard(tc.host) + "/" + tc.host + "/" + fmt.Sprint(tc.rev)
		if key != want {
			t.Errorf("HostRevKey(%s, %d) = %s, want %s", tc.host, tc.rev, key, want)
		}
		host, rev, err := ParseHostRevKey("berth/x", key)
		if err != nil || host != tc.host || rev != tc.rev {
			t.Errorf("ParseHostRevKey(%s) = %s %d %v", key, host, rev, err)
		}
	}
	other := "00"
	if Shard("h1") == other {
		other = "01"
	}
	for _, key := range []string{
		"berth/shards/" + other + "/h1/1",                          // another shard than the host's
		"berth/shards/" + Shard("h1") + "/h1/007",                  // a rev that is not canonical
		"berth/shards/" + Shard("h1") + "/h1/-1",                   // not a number
		"berth/shards/" + Shard("h1") + "/h1/",                     // no rev
		"berth/shards/" + Shard("h1") + "/h1/1/x",                  // an extra segment
		"berth/shards/" + Shard("h1") + "/h1",                      // too few segments
		"berth/shards/" + Shard("H_1") + "/H_1/1",                  // a host that is no label
		"berth/shards/" + Shard("") + "//1",                        // no host
		"other/shards/" + Shard("h1") + "/h1/1",                    // another prefix
		"berth/hosts/h1",                                           // layout 1
		"berth/shards/" + Shard("h1") + "/h1/1e3",                  // not decimal
		"berth/shards/" + Shard("h1") + "/h1/18446744073709551616", // beyond uint64
	} {
		if host, rev, err := ParseHostRevKey("berth", key); err == nil {
			t.Errorf("ParseHostRevKey(%s) = %s %d, want an error", key, host, rev)
		}
	}
}
