package resolve

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TestCacheBound: past CacheMax names, CLOCK evicts: a fully expired
// name first, then one not used since the hand last passed; watched names
// last.
func TestCacheBound(t *testing.T) {
	addr := netip.MustParseAddr("203.0.113.10")
	name := func(i int) string { return fmt.Sprintf("n%d.example.test", i) }
	tests := []struct {
		name    string
		watch   []int
		ttl     map[int]uint32 // default 300
		steps   func(e *testEnv)
		kept    []int
		evicted []int
	}{
		{
			name: "unreferenced name goes first",
			steps: func(e *testEnv) {
				e.verify(t, name(1), "203.0.113.10")
				e.verify(t, name(2), "203.0.113.10")
				e.verify(t, name(3), "203.0.113.10")
				e.verify(t, name(1), "203.0.113.10") // hit: n1 gets its second chance
				e.verify(t, name(4), "203.0.113.10")
			},
			kept:    []int{1, 3, 4},
			evicted: []int{2},
		},
		{
			name: "an expired name (grace included) goes before unreferenced ones",
			ttl:  map[int]uint32{3: 10},
			steps: func(e *testEnv) {
				for i := 1; i <= 3; i++ {
					e.verify(t, name(i), "203.0.113.10")
				}
				for i := 1; i <= 3; i++ {
					e.verify(t, name(i), "203.0.113.10") // all referenced
				}
				e.clk.Advance(10*time.Second + DefaultGrace)
				e.verify(t, name(4), "203.0.113.10")
			},
			kept:    []int{1, 2, 4},
			evicted: []int{3},
		},
		{
			// In grace is not expired: CLOCK decides, and every name was
			// referenced, so the hand's first goes.
			name: "a name in grace is not expired",
			ttl:  map[int]uint32{3: 10},
			steps: func(e *testEnv) {
				for i := 1; i <= 3; i++ {
					e.verify(t, name(i), "203.0.113.10")
				}
				for i := 1; i <= 3; i++ {
					e.verify(t, name(i), "203.0.113.10")
				}
				e.clk.Advance(10 * time.Second)
				e.verify(t, name(4), "203.0.113.10")
			},
			kept:    []int{2, 3, 4},
			evicted: []int{1},
		},
		{
			name:  "watched names stay",
			watch: []int{1},
			steps: func(e *testEnv) {
				for i := 1; i <= 6; i++ {
					e.verify(t, name(i), "203.0.113.10")
				}
			},
			kept:    []int{1, 5, 6},
			evicted: []int{2, 3, 4},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.CacheMax = 3 })
			for i := 1; i <= 6; i++ {
				ttl, ok := tc.ttl[i]
				if !ok {
					ttl = 300
				}
				e.dns.SetAddrs(name(i), ttl, addr)
			}
			var watch []string
			for _, i := range tc.watch {
				watch = append(watch, name(i))
			}
			if err := e.r.Watch(watch); err != nil {
				t.Fatal(err)
			}
			tc.steps(e)
			for _, i := range tc.kept {
				if !e.r.Contains(name(i), addr) {
					t.Errorf("%s was evicted", name(i))
				}
			}
			for _, i := range tc.evicted {
				if e.r.Contains(name(i), addr) {
					t.Errorf("%s was kept", name(i))
				}
			}
			st := e.r.Stats()
			if st.Names != 3 || st.Evictions != uint64(len(tc.evicted)) {
				t.Errorf("Stats: %d names, %d evictions; want 3, %d", st.Names, st.Evictions, len(tc.evicted))
			}
		})
	}
}

// TestCacheMaxAddrs: a name keeps at most MaxAddrs addresses; when full,
// the one that expires soonest makes room.
func TestCacheMaxAddrs(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxAddrs = 2 })
	e.dns.SetRotate(1)
	e.dns.SetAddrs(allowed, 60, addrs("203.0.113.10", "203.0.113.11", "203.0.113.12")...)
	for _, a := range []string{"203.0.113.10", "203.0.113.11", "203.0.113.12"} {
		if got := e.verify(t, allowed, a); got != Match {
			t.Fatalf("Verify(%s) = %v, want match (the answer that carried it)", a, got)
		}
		e.clk.Advance(time.Second)
	}
	for a, want := range map[string]bool{"203.0.113.10": false, "203.0.113.11": true, "203.0.113.12": true} {
		if got := e.r.Contains(allowed, netip.MustParseAddr(a)); got != want {
			t.Errorf("Contains(%s) = %t, want %t", a, got, want)
		}
	}
}

// TestCacheAddDirect covers add's choices one by one: an address seen
// again keeps the later expiry, and a full entry refuses an address that
// would expire before everything it holds.
func TestCacheAddDirect(t *testing.T) {
	a := func(s string, exp int64) cachedAddr { return cachedAddr{addr: netip.MustParseAddr(s), exp: exp} }
	tests := []struct {
		name string
		have []cachedAddr
		add  cachedAddr
		want []cachedAddr
	}{
		{name: "new address", have: []cachedAddr{a("192.0.2.1", 10)}, add: a("192.0.2.2", 5), want: []cachedAddr{a("192.0.2.1", 10), a("192.0.2.2", 5)}},
		{name: "seen again, later", have: []cachedAddr{a("192.0.2.1", 10)}, add: a("192.0.2.1", 20), want: []cachedAddr{a("192.0.2.1", 20)}},
		{name: "seen again, earlier", have: []cachedAddr{a("192.0.2.1", 10)}, add: a("192.0.2.1", 5), want: []cachedAddr{a("192.0.2.1", 10)}},
		{name: "full: replaces the soonest", have: []cachedAddr{a("192.0.2.1", 10), a("192.0.2.2", 7), a("192.0.2.3", 9)}, add: a("192.0.2.4", 8), want: []cachedAddr{a("192.0.2.1", 10), a("192.0.2.4", 8), a("192.0.2.3", 9)}},
		{name: "full: an address in grace (the soonest) makes room", have: []cachedAddr{a("192.0.2.1", -5), a("192.0.2.2", 7), a("192.0.2.3", 9)}, add: a("192.0.2.4", 8), want: []cachedAddr{a("192.0.2.4", 8), a("192.0.2.2", 7), a("192.0.2.3", 9)}},
		{name: "full: refuses one sooner than all", have: []cachedAddr{a("192.0.2.1", 10), a("192.0.2.2", 7), a("192.0.2.3", 9)}, add: a("192.0.2.4", 6), want: []cachedAddr{a("192.0.2.1", 10), a("192.0.2.2", 7), a("192.0.2.3", 9)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(10, 3, 0)
			e := &entry{addrs: append([]cachedAddr(nil), tc.have...)}
			c.add(e, tc.add)
			if len(e.addrs) != len(tc.want) {
				t.Fatalf("addrs = %v, want %v", e.addrs, tc.want)
			}
			for i := range tc.want {
				if e.addrs[i] != tc.want[i] {
					t.Errorf("addrs = %v, want %v", e.addrs, tc.want)
					break
				}
			}
		})
	}
}

// TestCacheGraceKept: merges prune an address only once its grace has
// ended, and until then it is what Cached reports.
func TestCacheGraceKept(t *testing.T) {
	a := func(s string, exp int64) cachedAddr { return cachedAddr{addr: netip.MustParseAddr(s), exp: exp} }
	c := newCache(10, 3, 100)
	const name = "n.example.test"
	steps := []struct {
		now   int64
		merge []cachedAddr
		want  map[string]Cached
		held  int
	}{
		{now: 0, merge: []cachedAddr{a("192.0.2.1", 10)}, want: map[string]Cached{"192.0.2.1": CachedFresh}, held: 1},
		{now: 50, merge: []cachedAddr{a("192.0.2.2", 60)}, want: map[string]Cached{"192.0.2.1": CachedGrace, "192.0.2.2": CachedFresh}, held: 2},
		{now: 109, want: map[string]Cached{"192.0.2.1": CachedGrace, "192.0.2.2": CachedGrace}, held: 2},
		{now: 110, want: map[string]Cached{"192.0.2.1": CachedNone, "192.0.2.2": CachedGrace}, held: 1},
		{now: 150, merge: []cachedAddr{a("192.0.2.3", 200)}, want: map[string]Cached{"192.0.2.1": CachedNone, "192.0.2.2": CachedGrace, "192.0.2.3": CachedFresh}, held: 2},
	}
	for _, s := range steps {
		if s.merge != nil {
			c.merge(name, famA, s.merge, 0, s.now, s.now, false)
		}
		for addr, want := range s.want {
			if got := c.cached(name, netip.MustParseAddr(addr), s.now); got != want {
				t.Errorf("t=%d: cached(%s) = %v, want %v", s.now, addr, got, want)
			}
		}
		if v := c.look(name, netip.MustParseAddr("192.0.2.9"), s.now, false); v.held != s.held {
			t.Errorf("t=%d: %d addresses held, want %d", s.now, v.held, s.held)
		}
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if n := len(c.ents[c.idx[name]].addrs); n != 2 {
		t.Errorf("%d addresses stored after the last merge, want 2 (the one past its grace pruned)", n)
	}
}
