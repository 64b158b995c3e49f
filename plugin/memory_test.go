package berth

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthdns/berth/record"
	"github.com/coredns/coredns/plugin/file"
)

// The memory an index holds per record, against CoreDNS's file plugin
// holding the same records (berth's own zone transfer, parsed by the file
// plugin), on bench's dataset (bench/data.go's Dataset: 3 replicas per
// service, 80/tcp named http, every fifth service also 9090/tcp). By
// default it runs at 3,000 instances; BERTH_ZONE_MEMORY lists other sizes
// in instances (30 per host up to 30,000, 100 per host above), e.g.
//
//	BERTH_ZONE_MEMORY=30000,1000000 go test -count=1 -run ZoneMemory -v ./plugin
//
// BERTH_ZONE_HEAP_PROFILE=DIR writes a heap profile of each index while it
// is live (DIR/berth-<n>.pprof, DIR/file-<n>.pprof; `go tool pprof
// -sample_index=inuse_space`); BERTH_ZONE_RSS=1 also builds each index in
// a fresh process of its own and reports its growth in resident memory,
// the figure bench/ compares.

// memDataset is bench.Dataset's documents for hosts x perHost instances.
func memDataset(tb testing.TB, hosts, perHost int) []*hostDocs {
	tb.Helper()
	data := make([]*hostDocs, hosts)
	for h := range data {
		addr := netip.AddrFrom4([4]byte{198, 18, byte(h / 250), byte(h%250 + 1)})
		data[h] = &hostDocs{Host: &record.Host{V: record.Version, Name: fmt.Sprintf("h%04d", h), Addrs: []netip.Addr{addr}, Rev: 1}}
	}
	for h := range hosts {
		addr := data[h].Host.Addrs[0]
		for c := range perHost {
			g := c*hosts + h
			s := g / 3
			sum := sha256.Sum256(fmt.Appendf(nil, "berth-bench-%d", g))
			svc := fmt.Sprintf("svc-%05d", s)
			ctr := &record.Container{V: record.Version, ID: hex.EncodeToString(sum[:]),
				Name: fmt.Sprintf("%s-%d", svc, g%3), Service: svc,
				Image: "registry.example.org/team/" + svc + ":1.2.3", Health: record.HealthHealthy,
				Priority: record.DefaultPriority, Weight: record.DefaultWeight,
				Ports: []record.Port{{Port: 80, Proto: "tcp", Name: "http", Addr: addr, HostPort: 20000 + c}},
			}
			if s%5 == 0 {
				ctr.Ports = append(ctr.Ports, record.Port{Port: 9090, Proto: "tcp", Addr: addr, HostPort: 40000 + c})
			}
			// Decoded from JSON as the watcher decodes them, so that the
			// documents' own size is what the watcher holds.
			js, err := json.Marshal(ctr)
			if err != nil {
				tb.Fatal(err)
			}
			if ctr, err = record.DecodeContainer(record.ContainerKey("berth", data[h].Host.Name, ctr.ID), js); err != nil {
				tb.Fatal(err)
			}
			data[h].Containers = append(data[h].Containers, ctr)
		}
		slices.SortFunc(data[h].Containers, func(a, b *record.Container) int { return strings.Compare(a.ID, b.ID) })
	}
	return data
}

// memShape is the hosts and containers per host of a size in instances.
func memShape(instances int) (hosts, perHost int) {
	perHost = 30
	if instances > 30000 {
		perHost = 100
	}
	return (instances + perHost - 1) / perHost, perHost
}

// loadMemZone builds a zone from data as the watcher's first full load
// does: loadChunk hosts per update (fetchInto in watch.go).
func loadMemZone(data []*hostDocs) *Zone {
	z := NewZone(benchZone, 5, nil, nil)
	for i := 0; i < len(data); i += loadChunk {
		batch := make(map[string]*hostDocs, loadChunk)
		for _, d := range data[i:min(i+loadChunk, len(data))] {
			batch[d.Host.Name] = d
		}
		z.update(batch, 1)
	}
	z.MarkLoaded()
	return z
}

// zoneText is z's transfer in the file plugin's master-file format.
func zoneText(z *Zone) string {
	soa, rrs := z.snapshot()
	var text strings.Builder
	text.WriteString(soa.String() + "\n")
	for _, rr := range rrs {
		text.WriteString(rr.String() + "\n")
	}
	return text.String()
}

// liveHeap is the live heap that build's result holds, after a GC, the
// bytes allocated while building it and the time it took.
func liveHeap(build func() any) (live, allocated int64, took time.Duration, v any) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	v = build()
	took = time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	return int64(after.HeapAlloc) - int64(before.HeapAlloc), int64(after.TotalAlloc - before.TotalAlloc), took, v
}

func writeHeapProfile(t *testing.T, name string) {
	dir := os.Getenv("BERTH_ZONE_HEAP_PROFILE")
	if dir == "" {
		return
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
}

func TestZoneMemory(t *testing.T) {
	sizes := []int{3000}
	if env := os.Getenv("BERTH_ZONE_MEMORY"); env != "" {
		sizes = nil
		for _, s := range strings.Split(env, ",") {
			n, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("BERTH_ZONE_MEMORY: %v", err)
			}
			sizes = append(sizes, n)
		}
	}
	if os.Getenv("BERTH_ZONE_HEAP_PROFILE") != "" {
		runtime.MemProfileRate = 4096
	}
	for _, instances := range sizes {
		t.Run(strconv.Itoa(instances), func(t *testing.T) {
			hosts, perHost := memShape(instances)
			docsLive, _, _, v := liveHeap(func() any { return memDataset(t, hosts, perHost) })
			data := v.([]*hostDocs)
			// The watcher keeps these documents to compile them again
			// (appliedHost.docs in watch.go): the same sorted slice the
			// batch had, no copy, so docsLive is all they cost.
			berthLive, berthAlloc, berthTook, v := liveHeap(func() any { return loadMemZone(data) })
			z := v.(*Zone)
			writeHeapProfile(t, fmt.Sprintf("berth-%d.pprof", instances))
			records := z.Records()
			text := zoneText(z)
			z, v = nil, nil
			fileLive, fileAlloc, fileTook, v := liveHeap(func() any {
				fz, err := file.Parse(strings.NewReader(text), benchZone, "bench.zone", 0)
				if err != nil {
					t.Fatal(err)
				}
				return fz
			})
			writeHeapProfile(t, fmt.Sprintf("file-%d.pprof", instances))
			runtime.KeepAlive(v)
			runtime.KeepAlive(data)
			per := func(b int64) float64 { return float64(b) / float64(records) }
			t.Logf("%d instances, %d records: berth %.1f MiB live (%.0f B/record), %.1f MiB allocated loading in %v; file %.1f MiB live (%.0f B/record), %.1f MiB allocated parsing in %v; the documents berth compiled from %.1f MiB (%.0f B/instance)",
				instances, records, mib(berthLive), per(berthLive), mib(berthAlloc), berthTook.Round(time.Millisecond),
				mib(fileLive), per(fileLive), mib(fileAlloc), fileTook.Round(time.Millisecond),
				mib(docsLive), float64(docsLive)/float64(instances))
			if os.Getenv("BERTH_ZONE_RSS") != "" {
				berthRSS := childRSS(t, "berth", instances, "")
				path := filepath.Join(t.TempDir(), "bench.zone")
				if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
				fileRSS := childRSS(t, "file", instances, path)
				t.Logf("resident memory grown by the index in a fresh process: berth %.1f MiB (%.0f B/record), file %.1f MiB (%.0f B/record)",
					mib(berthRSS), per(berthRSS), mib(fileRSS), per(fileRSS))
			}
			if berthLive > fileLive {
				t.Errorf("berth holds %.0f B per record, the file plugin %.0f", per(berthLive), per(fileLive))
			}
		})
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// childRSS runs TestZoneMemoryChild in a fresh process and returns how
// much its resident set grew while it built the index.
func childRSS(t *testing.T, kind string, instances int, path string) int64 {
	cmd := exec.Command(os.Args[0], "-test.run=^TestZoneMemoryChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BERTH_ZONE_CHILD="+kind, "BERTH_ZONE_CHILD_SIZE="+strconv.Itoa(instances), "BERTH_ZONE_CHILD_FILE="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", kind, err, out)
	}
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "rss-growth "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("%s: no figure in\n%s", kind, out)
	return 0
}

// TestZoneMemoryChild is childRSS's other side; it does nothing unless
// childRSS started it.
func TestZoneMemoryChild(t *testing.T) {
	kind := os.Getenv("BERTH_ZONE_CHILD")
	if kind == "" {
		t.Skip("run by TestZoneMemory with BERTH_ZONE_RSS")
	}
	instances, err := strconv.Atoi(os.Getenv("BERTH_ZONE_CHILD_SIZE"))
	if err != nil {
		t.Fatal(err)
	}
	var data []*hostDocs
	if kind == "berth" {
		hosts, perHost := memShape(instances)
		data = memDataset(t, hosts, perHost)
	}
	runtime.GC()
	before := rss(t)
	var v any
	switch kind {
	case "berth":
		v = loadMemZone(data)
	case "file":
		f, err := os.Open(os.Getenv("BERTH_ZONE_CHILD_FILE"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if v, err = file.Parse(bufio.NewReader(f), benchZone, "bench.zone", 0); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	fmt.Printf("rss-growth %d\n", rss(t)-before)
	runtime.KeepAlive(v)
	runtime.KeepAlive(data)
}

// rss is this process's resident set, from /proc.
func rss(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// A host's records are made in arrays of the host's (alloc.go), which live
// as long as any record in them: after many changes of one container, the
// zone and its journal must hold no more than a few hosts' worth of the
// host's past arrays. Were install to keep the unchanged names' old nodes, or the journal
// the records themselves rather than copies, each change would keep one
// more generation of the host's arrays alive.
func TestHostChangesFreeTheirArrays(t *testing.T) {
	const changes = 200
	data := memDataset(t, 2, 100)
	z := NewZone(benchZone, 5, nil, nil)
	z.update(map[string]*hostDocs{data[0].Host.Name: data[0], data[1].Host.Name: data[1]}, 1)
	z.MarkLoaded()
	oneHost, _, _, _ := liveHeap(func() any { return loadMemZone(data[:1]) })
	grown, _, _, _ := liveHeap(func() any {
		host := data[0]
		for i := range changes {
			changed := *host.Containers[i%len(host.Containers)]
			changed.Ports = slices.Clone(changed.Ports)
			changed.Ports[0].HostPort = 20000 + i
			containers := slices.Clone(host.Containers)
			containers[i%len(containers)] = &changed
			host = &hostDocs{Host: host.Host, Containers: containers}
			if !z.update(map[string]*hostDocs{host.Host.Name: host}, uint64(2+i)) {
				t.Fatalf("change %d: the serial did not move", i)
			}
		}
		return nil
	})
	t.Logf("after %d changes of one container the live heap grew by %d KiB; one host's index is %d KiB", changes, grown>>10, oneHost>>10)
	// Each generation kept would be about one host's index (the journal
	// alone would keep some hundred); the margin is for the other tests'
	// goroutines, which allocate in this process too.
	if grown > 8*oneHost {
		t.Errorf("after %d changes of one container the live heap grew by %d KiB, %.1f times one host's index", changes, grown>>10, float64(grown)/float64(oneHost))
	}
	runtime.KeepAlive(z)
}
