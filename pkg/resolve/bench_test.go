package resolve

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// hitCase is one cache-hit shape: a name with n addresses, the destination
// being the last of them (the longest scan).
type hitCase struct {
	name  string
	addrs int
	v6    bool
}

var hitCases = []hitCase{
	{name: "ipv4/2addrs", addrs: 2},
	{name: "ipv4/64addrs", addrs: 64},
	{name: "ipv6/2addrs", addrs: 2, v6: true},
}

// hitEnv returns a Resolver on the real clock whose cache holds allowed
// with c.addrs addresses, and the destination to verify.
func hitEnv(tb testing.TB, c hitCase) (*Resolver, netip.Addr) {
	tb.Helper()
	e := newEnv(tb, func(cfg *Config) { cfg.Now, cfg.After = nil, nil })
	as := make([]netip.Addr, c.addrs)
	for i := range as {
		if c.v6 {
			as[i] = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		} else {
			as[i] = netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
		}
	}
	e.dns.SetAddrs(allowed, 3600, as...)
	dst := as[len(as)-1]
	if out, err := e.r.Verify(context.Background(), allowed, dst); err != nil || out != Match {
		tb.Fatalf("priming Verify = %v, %v", out, err)
	}
	return e.r, dst
}

// BenchmarkVerifyHit is the cost DNS verification adds to a flow whose
// destination is cached: the common case.
func BenchmarkVerifyHit(b *testing.B) {
	ctx := context.Background()
	for _, c := range hitCases {
		b.Run(c.name, func(b *testing.B) {
			r, dst := hitEnv(b, c)
			b.ReportAllocs()
			for range b.N {
				if out, err := r.Verify(ctx, allowed, dst); out != Match || err != nil {
					b.Fatalf("Verify = %v, %v", out, err)
				}
			}
		})
	}
	// The same hit on a clock that does not move: what the hit costs
	// without reading time. On this project's 2-vCPU VM a time.Now() costs
	// from 20ns idle to over 1µs under load, which dominates the hit; an
	// engine that already reads the clock per packet could share it.
	b.Run("ipv4/2addrs/fixed-clock", func(b *testing.B) {
		r, dst := hitEnv(b, hitCases[0])
		fixed := time.Now()
		r.cfg.Now = func() time.Time { return fixed }
		r.base = fixed.Add(-time.Minute)
		b.ReportAllocs()
		for range b.N {
			if out, err := r.Verify(ctx, allowed, dst); out != Match || err != nil {
				b.Fatalf("Verify = %v, %v", out, err)
			}
		}
	})
	b.Run("ipv4/2addrs/since", func(b *testing.B) {
		r, dst := hitEnv(b, hitCases[0])
		since := time.Now()
		b.ReportAllocs()
		for range b.N {
			if res, err := r.VerifySince(ctx, allowed, dst, since); res.Outcome != Match || err != nil {
				b.Fatalf("VerifySince = %+v, %v", res, err)
			}
		}
	})
	b.Run("contains", func(b *testing.B) {
		r, dst := hitEnv(b, hitCases[0])
		b.ReportAllocs()
		for range b.N {
			if !r.Contains(allowed, dst) {
				b.Fatal("Contains = false")
			}
		}
	})
	b.Run("ipv4/2addrs/parallel", func(b *testing.B) {
		r, dst := hitEnv(b, hitCases[0])
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if out, err := r.Verify(ctx, allowed, dst); out != Match || err != nil {
					b.Errorf("Verify = %v, %v", out, err)
					return
				}
			}
		})
	})
}

// BenchmarkCached is the engine's non-blocking check on a hit, fresh and
// in grace: the cost a flow pays before any verification.
func BenchmarkCached(b *testing.B) {
	for _, c := range hitCases {
		b.Run(c.name, func(b *testing.B) {
			r, dst := hitEnv(b, c)
			b.ReportAllocs()
			for range b.N {
				if r.Cached(allowed, dst) != CachedFresh {
					b.Fatal("not fresh")
				}
			}
		})
	}
	b.Run("ipv4/2addrs/grace", func(b *testing.B) {
		r, dst := hitEnv(b, hitCases[0])
		r.base = r.base.Add(-time.Hour - time.Second) // the TTL ended a second ago
		b.ReportAllocs()
		for range b.N {
			if r.Cached(allowed, dst) != CachedGrace {
				b.Fatal("not in grace")
			}
		}
	})
}

// TestVerifyHitAllocs backs the benchmarks' zero: a cache hit does not
// allocate.
func TestVerifyHitAllocs(t *testing.T) {
	ctx := context.Background()
	for _, c := range hitCases {
		t.Run(c.name, func(t *testing.T) {
			r, dst := hitEnv(t, c)
			if n := testing.AllocsPerRun(1000, func() { _, _ = r.Verify(ctx, allowed, dst) }); n != 0 {
				t.Errorf("Verify on a hit: %v allocs, want 0", n)
			}
			since := time.Now()
			if n := testing.AllocsPerRun(1000, func() { _, _ = r.VerifySince(ctx, allowed, dst, since) }); n != 0 {
				t.Errorf("VerifySince on a hit: %v allocs, want 0", n)
			}
			if n := testing.AllocsPerRun(1000, func() { r.Cached(allowed, dst) }); n != 0 {
				t.Errorf("Cached on a hit: %v allocs, want 0", n)
			}
			if n := testing.AllocsPerRun(1000, func() { r.Contains(allowed, dst) }); n != 0 {
				t.Errorf("Contains on a hit: %v allocs, want 0", n)
			}
		})
	}
}

// BenchmarkCacheMemory reports the heap the cache holds per name when full
// at 100,000 names of two IPv4 addresses each (the default CacheMax).
func BenchmarkCacheMemory(b *testing.B) {
	const names = 100_000
	for range b.N {
		c := newCache(names, DefaultMaxAddrs, DefaultGrace)
		keys := make([]string, names)
		for i := range keys {
			keys[i] = fmt.Sprintf("host-%06d.example.test", i)
		}
		batch := []cachedAddr{
			{addr: netip.AddrFrom4([4]byte{203, 0, 113, 1}), exp: int64(time.Hour)},
			{addr: netip.AddrFrom4([4]byte{203, 0, 113, 2}), exp: int64(time.Hour)},
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for _, k := range keys {
			c.merge(k, famA, batch, 0, 0, 0, false)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if c.len() != names {
			b.Fatalf("cache holds %d names, want %d", c.len(), names)
		}
		perName := float64(after.HeapAlloc-before.HeapAlloc) / names
		b.ReportMetric(perName, "B/name")
		b.ReportMetric(perName*names/(1<<20), "MiB/100k-names")
		runtime.KeepAlive(c)
		runtime.KeepAlive(keys)
	}
}
