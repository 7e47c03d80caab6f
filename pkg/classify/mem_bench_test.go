package classify

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The memory benchmarks measure what one flow head costs while the engine
// holds it: the flow struct and the buffers it keeps, for flows that have
// sent a given head. The engine keeps a flow's TCPFlow or QUICFlow until
// the flow is decided (and, for a name, its DNS answers are checked), so a
// table of undecided flows is as large as this figure times their number
// (issue 13: 65,536 flows of one byte each took 1.5 GB).
//
// bytes/flow is measured, not computed: memFlows flows are held at once,
// and the live heap with them is compared with the heap once they are
// released and dropped. allocs/op is per flow, in the steady state of a
// flow table (a slot released and refilled), so it shows whether the
// buffer pools serve every flow once warm.

// memFlows is how many flows a memory benchmark holds at once: enough that
// their heap dwarfs the benchmark's own.
const memFlows = 1024

// liveHeap returns the live heap after two collections: the second frees
// what the first moved to sync.Pool's victim cache, so pooled buffers that
// no flow holds do not count.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// benchMem fills memFlows slots with fill, then per iteration releases one
// slot and fills it again; at the end it reports the heap the memFlows
// flows held take, per flow.
func benchMem[T any](b *testing.B, fill, release func(*T)) {
	b.ReportAllocs()
	flows := make([]T, memFlows)
	for i := range flows {
		fill(&flows[i])
	}
	b.ResetTimer()
	for i := range b.N {
		f := &flows[i%memFlows]
		release(f)
		fill(f)
	}
	b.StopTimer()
	held := liveHeap()
	for i := range flows {
		release(&flows[i])
	}
	flows = nil
	free := liveHeap()
	b.ReportMetric(float64(int64(held)-int64(free))/memFlows, "bytes/flow")
}

// memTCPCase is a flow head as segments, and the status it must leave the
// flow in.
type memTCPCase struct {
	name string
	isn  uint32
	segs []segment
	want Status
}

func memTCPCases(b *testing.B) []memTCPCase {
	b.Helper()
	curl := loadPcapFixture(b, filepath.Join("testdata", "tcp-curl-tls.pcap"))
	chromium := loadPcapFixture(b, filepath.Join("testdata", "tcp-chromium-tls.pcap"))
	// The largest heads a flow can hold undecided: max_bytes-1 bytes of an
	// HTTP head without its blank line, and of a ClientHello that ends
	// exactly at max_bytes in two records (the most a TLS head holds: its
	// stream and its handshake bytes without record headers).
	const limit = DefaultMaxBytes
	httpHead := []byte("GET / HTTP/1.1\r\nHost: big.example.test\r\nX-Pad: " +
		strings.Repeat("a", limit) + "\r\n\r\n")[:limit-1]
	pad := limit - 2*recordHeaderLen - len(helloSpec{exts: []tlsExt{sniExt("big.example.test"), {0x0015, nil}}}.msg())
	big := records(helloSpec{exts: []tlsExt{sniExt("big.example.test"), {0x0015, make([]byte, pad)}}}.msg(), limit/2)
	if len(big) != limit {
		b.Fatalf("two-record hello of %d bytes, want %d", len(big), limit)
	}
	mss := func(s []byte) []segment {
		var at []int
		for i := 1448; i < len(s); i += 1448 {
			at = append(at, i)
		}
		return cut(testISN, s, at...)
	}
	return []memTCPCase{
		{"1-byte", testISN, []segment{seg(testISN, 0, []byte{contentHandshake})}, NeedMore},
		{"517-byte-hello-curl", curl.isn, curl.segs, Done},
		{"1448-byte-first-segment-chromium", chromium.isn, chromium.segs[:2], NeedMore},
		{"1961-byte-hello-2-segments-chromium", chromium.isn, chromium.segs, Done},
		{"max_bytes-1-http-head", testISN, mss(httpHead), NeedMore},
		{"max_bytes-1-tls-2-records", testISN, mss(big[:limit-1]), NeedMore},
	}
}

// BenchmarkMemTCPFlow reports the memory of one TCP flow head held by the
// engine, after the segments of each case.
func BenchmarkMemTCPFlow(b *testing.B) {
	for _, c := range memTCPCases(b) {
		b.Run(c.name, func(b *testing.B) {
			fill := func(f *TCPFlow) {
				f.Reset(c.isn, DefaultMaxBytes)
				f.Feed(c.isn, true, nil)
				var r Result
				for _, s := range c.segs {
					r = f.Feed(s.seq, s.syn, s.payload)
				}
				if r.Status != c.want {
					b.Fatalf("status %v, want %v: %+v", r.Status, c.want, r)
				}
			}
			benchMem(b, fill, (*TCPFlow).Release)
		})
	}
}

// BenchmarkMemQUICFlow reports the memory of one QUIC flow head held by
// the engine, after the datagrams of each case.
func BenchmarkMemQUICFlow(b *testing.B) {
	chromium := readQUICRecording(b, filepath.Join("testdata", "quic", "quic-chromium.pcap"))
	// A ClientHello of exactly the limit in Initials of 1100 CRYPTO bytes,
	// all but the last fed: the most a QUIC flow holds undecided.
	hello := testClientHello("big.example.test", 0)
	hello = testClientHello("big.example.test", QUICDefaultMaxBytes-len(hello)-4)
	if len(hello) != QUICDefaultMaxBytes {
		b.Fatalf("hello of %d bytes, want %d", len(hello), QUICDefaultMaxBytes)
	}
	var big [][]byte
	for off := 0; off < len(hello); off += 1100 {
		end := min(off+1100, len(hello))
		big = append(big, initialDatagram(b, uint64(len(big)), cryptoFrame(uint64(off), hello[off:end])))
	}
	for _, c := range []struct {
		name      string
		datagrams [][]byte
		want      Status
	}{
		{"first-datagram-chromium", chromium[:1], NeedMore},
		{"2-datagram-hello-chromium", chromium[:2], Done},
		{"max_bytes-crypto-stream-less-one-datagram", big[:len(big)-1], NeedMore},
	} {
		b.Run(c.name, func(b *testing.B) {
			fill := func(f *QUICFlow) {
				f.Reset(0)
				var r Result
				for _, d := range c.datagrams {
					r = f.Feed(d)
				}
				if r.Status != c.want {
					b.Fatalf("status %v, want %v: %+v", r.Status, c.want, r)
				}
			}
			benchMem(b, fill, (*QUICFlow).Release)
		})
	}
}
