//go:build !race

package classify

import (
	"slices"
	"strings"
	"testing"
)

// Allocation counts of the pooled buffers' hot paths. Under the race
// detector sync.Pool drops pooled buffers on purpose, so these counts are
// not built there: `make test` runs them in a pass without -race.

// TestFlowBufAllocs checks that a buffer that grows through every class
// of the default limit, and is released, allocates nothing once the pools
// are warm.
func TestFlowBufAllocs(t *testing.T) {
	var b flowBuf
	run := func() {
		for n := 1; n <= DefaultMaxBytes; n *= 2 {
			b.grow(n, n/2, DefaultMaxBytes)
		}
		b.release()
	}
	run()
	if a := testing.AllocsPerRun(100, run); a != 0 {
		t.Errorf("growing 1 B to %d B: %v allocs, want 0", DefaultMaxBytes, a)
	}
}

// TestTCPFlowAllocs checks that once warm, Feed allocates only when it
// decides the flow: once for the name string.
func TestTCPFlowAllocs(t *testing.T) {
	stream := records(helloSpec{exts: []tlsExt{sniExt("www.example.test"), alpnExt("h2")}}.msg(), 60)
	httpHead := []byte("GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
	var f TCPFlow
	for _, tc := range []struct {
		name   string
		stream []byte
	}{{"tls", stream}, {"http", httpHead}} {
		t.Run(tc.name, func(t *testing.T) {
			segs := cut(testISN, tc.stream, len(tc.stream)/3, 2*len(tc.stream)/3)
			run := func() {
				f.Reset(testISN, 0)
				f.Feed(testISN, true, nil)
				for _, s := range slices.Backward(segs) {
					f.Feed(s.seq, false, s.payload)
				}
				if f.res.Status != Done {
					t.Fatalf("not decided: %+v", f.res)
				}
			}
			run() // warm the pool
			if a := testing.AllocsPerRun(100, run); a != 1 {
				t.Errorf("a flow in 3 segments: %v allocs, want 1 (the name)", a)
			}
			undecided := func() {
				f.Reset(testISN, 0)
				f.Feed(testISN, true, nil)
				f.Feed(segs[2].seq, false, segs[2].payload)
				f.Feed(segs[0].seq, false, segs[0].payload)
				f.Feed(segs[0].seq, false, segs[0].payload) // a retransmission
				if f.res.Status != NeedMore {
					t.Fatalf("decided: %+v", f.res)
				}
			}
			if a := testing.AllocsPerRun(100, undecided); a != 0 {
				t.Errorf("undecided segments: %v allocs, want 0", a)
			}
			f.Release()
		})
	}
}

// TestTCPFlowGrowthAllocs checks that flows whose buffers grow through
// every class up to max_bytes, in order and out of order, allocate
// nothing once the pools are warm.
func TestTCPFlowGrowthAllocs(t *testing.T) {
	emptyPools()
	heads := growthStreams("grow.example.test")
	heads["http head of max_bytes-1"] = []byte("GET / HTTP/1.1\r\nHost: a.test\r\nX: " + strings.Repeat("a", DefaultMaxBytes))[:DefaultMaxBytes-1]
	for name, head := range heads {
		head = head[:len(head)-1] // undecided: no name string to allocate
		for pname, plan := range growthPlans {
			segs := plan(head)
			var f TCPFlow
			run := func() {
				f.Reset(testISN, 0)
				for _, s := range segs {
					f.Feed(s.seq, false, s.payload)
				}
				if f.res.Status != NeedMore {
					t.Fatalf("%s, %s: decided: %+v", name, pname, f.res)
				}
				f.Release()
			}
			run() // warm the pools
			if a := testing.AllocsPerRun(20, run); a != 0 {
				t.Errorf("%s, %s: %v allocs per flow, want 0", name, pname, a)
			}
		}
	}
}
