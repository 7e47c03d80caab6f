package engine

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/pkg/policy"
)

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// rss is this process's resident set, from /proc.
func rss() uint64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkUndecidedFlows fills an engine with n undecided flows, each
// holding one payload byte of a ClientHello (the flow-head buffer's worst
// ratio of memory to bytes sent), from 256 sources, and reports the live
// heap per flow and per held packet, and the process's RSS with the table
// full: what the worst case in MemoryBound counts on.
func BenchmarkUndecidedFlows(b *testing.B) {
	for _, n := range []int{10_000, 65_536} {
		b.Run(fmt.Sprintf("flows=%d", n), func(b *testing.B) {
			hello := clientHello(b, "allowed.example.test")
			p, _ := policy.Parse("p.yaml", []byte(labPolicy), policy.Options{})
			b.ReportAllocs()
			var perFlow, perHeld, rssFull float64
			for range b.N {
				clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
				e, err := New(Config{Now: clock.Now, MaxFlows: n, MaxHeldTotal: 16 * n, HelloTimeout: time.Hour}, p, 1)
				if err != nil {
					b.Fatal(err)
				}
				s := e.Shard(0)
				s.Attach(nopSink{})
				before := heapInUse()
				var id uint32
				for i := 0; i < n; i++ {
					src := netip.AddrFrom4([4]byte{10, 0, byte(i % 256), 7})
					pk := Packet{Src: src, Dst: server, SrcPort: uint16(1024 + i/256), DstPort: 443, Proto: policy.TCP, Seq: 100, SYN: true}
					id++
					pk.ID = id
					s.Handle(&pk)
					pk.SYN, pk.Seq, pk.Payload = false, 101, hello[:1]
					id++
					pk.ID = id
					s.Handle(&pk)
				}
				mid := heapInUse()
				if u := e.Stats().Undecided.Load(); u != int64(n) {
					b.Fatalf("%d undecided flows, want %d", u, n)
				}
				// Seven more held packets per flow: the same byte again
				// (the ids' slice grows past its first capacity).
				const more = 7
				for i := 0; i < n*more; i++ {
					src := netip.AddrFrom4([4]byte{10, 0, byte(i % n % 256), 7})
					pk := Packet{Src: src, Dst: server, SrcPort: uint16(1024 + i%n/256), DstPort: 443, Proto: policy.TCP, Seq: 101, Payload: hello[:1]}
					id++
					pk.ID = id
					s.Handle(&pk)
				}
				if h := e.Stats().Held.Load(); h != int64(n*(1+more)) {
					b.Fatalf("%d packets held, want %d", h, n*(1+more))
				}
				after := heapInUse()
				perFlow = float64(mid-before) / float64(n)
				perHeld = (float64(after) - float64(mid)) / float64(n*more)
				rssFull = float64(rss())
				runtime.KeepAlive(e)
			}
			b.ReportMetric(perFlow, "heap-B/flow")
			b.ReportMetric(perHeld, "heap-B/held")
			b.ReportMetric(rssFull/(1<<20), "RSS-MiB")
		})
	}
}

// BenchmarkShareAccounting is the fair-share bookkeeping one held packet
// costs on the verdict path: its source's share checked, the packet
// counted, and given back at the decision.
func BenchmarkShareAccounting(b *testing.B) {
	p, _ := policy.Parse("p.yaml", []byte(labPolicy), policy.Options{})
	e, _ := New(Config{}, p, 1)
	s := e.Shard(0)
	f := &flow{}
	f.src = s.sourceOf([4]byte{10, 0, 1, 7})
	b.ReportAllocs()
	for range b.N {
		if !s.take(f, ResHeld, 1) {
			b.Fatal("refused")
		}
		s.release(f)
	}
}
