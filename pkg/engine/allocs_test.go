//go:build !race

package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

// Allocation counts of the verdict path. The head parsers' buffers come
// from sync.Pool, which the race detector drops at random on purpose, so
// these are not built under -race: `make test` runs them in a pass
// without it.

func TestHandleAllocs(t *testing.T) {
	h := newHarness(t, labPolicy, func(c *Config) { c.Log = func(*declog.Record) {} })
	h.s.Attach(nopSink{})
	hello := clientHello(t, "allowed.example.test")
	var pk Packet
	run := func() {
		h.sport++
		pk = Packet{Src: client, Dst: server, SrcPort: h.sport, DstPort: 443, Proto: policy.TCP, Seq: 100, SYN: true}
		h.s.Handle(&pk)
		pk.SYN, pk.Seq, pk.Payload = false, 101, hello[:200]
		h.s.Handle(&pk)
		pk.Seq, pk.Payload = 301, hello[200:]
		h.s.Handle(&pk)
		h.clock.Add(time.Minute)
		h.e.Tick(h.clock.Now()) // forget it: the flow goes back to the free list
	}
	run() // warm up
	// The one allocation per flow is the name string handed to the policy.
	if n := testing.AllocsPerRun(50, run); n > 1 {
		t.Errorf("a 3-packet TLS flow costs %v allocations, want at most 1", n)
	}
}

// TestShareAccountingAllocs: the per-source accounting on the verdict
// path allocates nothing once warm: flows of two sources alternating,
// their sources forgotten and made again between flows.
func TestShareAccountingAllocs(t *testing.T) {
	h := newHarness(t, labPolicy, func(c *Config) { c.Log = func(*declog.Record) {} })
	h.s.Attach(nopSink{})
	hello := clientHello(t, "allowed.example.test")
	srcs := []netip.Addr{attacker, victim}
	var pk Packet
	i := 0
	run := func() {
		h.sport++
		i++
		pk = Packet{Src: srcs[i%2], Dst: server, SrcPort: h.sport, DstPort: 443, Proto: policy.TCP, Seq: 100, SYN: true}
		h.s.Handle(&pk)
		pk.SYN, pk.Seq, pk.Payload = false, 101, hello
		h.s.Handle(&pk)
		h.clock.Add(11 * time.Second)
		h.e.Tick(h.clock.Now()) // the flow and its source are forgotten
	}
	run()
	run()
	if n := testing.AllocsPerRun(100, run); n > 1 {
		t.Errorf("%v allocations per flow, want at most 1 (the name's string)", n)
	}
}
