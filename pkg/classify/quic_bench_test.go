package classify

import "testing"

// quicBenchFlows are the flows the benchmarks and allocation tests feed:
// the RFC 9001 client Initial (one datagram), and a ClientHello the size of
// one with a post-quantum key share (about 1.8 KB) in two datagrams.
func quicBenchFlows(tb testing.TB) []struct {
	name      string
	datagrams [][]byte
} {
	hello := testClientHello("bench.example.test", 1600)
	return []struct {
		name      string
		datagrams [][]byte
	}{
		{"one-datagram", [][]byte{unhex(tb, rfcVectors[0].packet)}},
		{"two-datagram", [][]byte{
			initialDatagram(tb, 0, cryptoFrame(0, hello[:1100])),
			initialDatagram(tb, 1, cryptoFrame(1100, hello[1100:])),
		}},
	}
}

// BenchmarkQUICFlow reads whole flows: key derivation per flow, then each
// datagram. A flow is reused with Reset, as the engine's flow table does.
func BenchmarkQUICFlow(b *testing.B) {
	for _, c := range quicBenchFlows(b) {
		b.Run(c.name, func(b *testing.B) {
			var f QUICFlow
			defer f.Release()
			b.ReportAllocs()
			for range b.N {
				f.Reset(0)
				var res Result
				for _, d := range c.datagrams {
					res = f.Feed(d)
				}
				if res.Status != Done {
					b.Fatalf("flow not decided: %+v", res)
				}
			}
		})
	}
}

// BenchmarkQUICWarmDatagram reads one more Initial datagram of a flow
// whose keys are already set up: the per-packet cost.
func BenchmarkQUICWarmDatagram(b *testing.B) {
	f, d := warmQUICFlow(b)
	b.ReportAllocs()
	for range b.N {
		f.datagrams = 0
		if res := f.Feed(d); res.Status != NeedMore {
			b.Fatalf("Feed = %+v", res)
		}
	}
}

// warmQUICFlow returns a flow that has read the first half of a ClientHello,
// and that half's datagram again (a retransmission: same bytes, read again).
func warmQUICFlow(tb testing.TB) (*QUICFlow, []byte) {
	tb.Helper()
	hello := testClientHello("warm.example.test", 1600)
	d := initialDatagram(tb, 0, cryptoFrame(0, hello[:1100]))
	f := new(QUICFlow)
	f.Reset(0)
	tb.Cleanup(f.Release)
	if res := f.Feed(d); res.Status != NeedMore {
		tb.Fatalf("Feed = %+v", res)
	}
	return f, d
}

// TestQUICAllocs backs the allocation figures: no allocation per datagram
// once a flow's keys are set up, and a fixed number per flow for the key
// setup (HKDF, two AES key schedules, a GCM instance) and the result.
func TestQUICAllocs(t *testing.T) {
	t.Run("per datagram", func(t *testing.T) {
		f, d := warmQUICFlow(t)
		got := testing.AllocsPerRun(100, func() {
			f.datagrams = 0
			f.Feed(d)
		})
		if got != 0 {
			t.Errorf("a warm flow allocates %v times per datagram, want 0", got)
		}
	})
	for _, c := range quicBenchFlows(t) {
		t.Run("per flow "+c.name, func(t *testing.T) {
			var f QUICFlow
			defer f.Release()
			got := testing.AllocsPerRun(100, func() {
				f.Reset(0)
				for _, d := range c.datagrams {
					f.Feed(d)
				}
			})
			t.Logf("%v allocations per flow", got)
			limit := quicAllocsPerFlow
			if raceEnabled {
				// A pooled buffer dropped by the race detector (see
				// raceEnabled) is made again: 2 allocations, for each of
				// the flow's packet scratch per datagram and its stream.
				limit += 2 * (len(c.datagrams) + 1)
			}
			if got > float64(limit) {
				t.Errorf("a flow allocates %v times, want at most %d", got, limit)
			}
		})
	}
}

// quicAllocsPerFlow is what a flow costs, measured with go1.26: 3 for the
// AES key schedules and the GCM instance (crypto/aes and crypto/cipher
// cannot key a cipher again in place), 1 for the Result's Name string.
// HKDF runs on the flow's reused HMAC state (quic_keys.go) and costs
// nothing; through crypto/hkdf it was 46.
const quicAllocsPerFlow = 4

// BenchmarkQUICKeySetup is the per-flow part of BenchmarkQUICFlow: the
// Initial keys of one DCID (HKDF, AES key schedules, GCM).
func BenchmarkQUICKeySetup(b *testing.B) {
	dcid := unhex(b, rfcDCID)
	var k quicInitialKeys
	b.ReportAllocs()
	for range b.N {
		k.setup(&quicV1, dcid)
	}
}
