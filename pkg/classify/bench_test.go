package classify

import (
	"path/filepath"
	"testing"
)

// benchStreams are the flow heads benchmarks run on: the RFC 8448 hello
// and the recorded clients.
func benchStreams(b *testing.B) []struct {
	name   string
	stream []byte
} {
	b.Helper()
	out := []struct {
		name   string
		stream []byte
	}{{"rfc8448", loadHexFixture(b, "testdata/rfc8448-s3-clienthello.hex").stream()}}
	paths, err := filepath.Glob(tcpPcapGlob)
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range paths {
		out = append(out, struct {
			name   string
			stream []byte
		}{filepath.Base(p), loadPcapFixture(b, p).stream()})
	}
	return out
}

func BenchmarkParseClientHello(b *testing.B) {
	for _, s := range benchStreams(b) {
		if s.stream[0] != contentHandshake {
			continue
		}
		msg := defragment(s.stream)
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for range b.N {
				if _, err := ParseClientHello(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseRequestHead(b *testing.B) {
	heads := map[string][]byte{
		"curl":    loadPcapFixture(b, "testdata/tcp-curl-http.pcap").stream(),
		"browser": []byte("GET /assets/app.js?v=3 HTTP/1.1\r\nHost: www.example.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\nAccept-Language: en-US,en;q=0.9\r\nReferer: http://www.example.test/\r\nConnection: keep-alive\r\n\r\n"),
	}
	for name, h := range heads {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(h)))
			for range b.N {
				if _, err := ParseRequestHead(h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// thirds cuts a stream into three in-order segments.
func thirds(s []byte) []segment {
	return cut(testISN, s, len(s)/3, 2*len(s)/3)
}

// BenchmarkReassembly adds a hello's three segments, last first, to a
// reassembler, taking its buffer from the pools and returning it per flow.
func BenchmarkReassembly(b *testing.B) {
	for _, s := range benchStreams(b) {
		segs := thirds(s.stream)
		var r reassembler
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(s.stream)))
			for range b.N {
				r.reset(DefaultMaxBytes)
				for i := len(segs) - 1; i >= 0; i-- {
					if err := r.add(int(segs[i].seq-(testISN+1)), segs[i].payload); err != nil {
						b.Fatal(err)
					}
				}
				if r.contiguous() != len(s.stream) {
					b.Fatal("not contiguous")
				}
			}
		})
	}
}

// BenchmarkTCPFlow runs whole flows through a reused TCPFlow: Reset, the
// SYN, three segments in order, the decision. The one allocation per flow
// is the name string of the Result.
func BenchmarkTCPFlow(b *testing.B) {
	for _, s := range benchStreams(b) {
		b.Run(s.name, func(b *testing.B) { benchFeed(b, thirds(s.stream), Done) })
	}
}

// BenchmarkTCPFlowNeedMore feeds all but the last segment: the path every
// undecided segment takes, which must not allocate.
func BenchmarkTCPFlowNeedMore(b *testing.B) {
	for _, s := range benchStreams(b) {
		b.Run(s.name, func(b *testing.B) { benchFeed(b, thirds(s.stream)[:2], NeedMore) })
	}
}

// benchFeed runs a flow of segs through a reused TCPFlow per iteration and
// checks it ends in want.
func benchFeed(b *testing.B, segs []segment, want Status) {
	var f TCPFlow
	defer f.Release()
	n := 0
	for _, sg := range segs {
		n += len(sg.payload)
	}
	b.ReportAllocs()
	b.SetBytes(int64(n))
	for range b.N {
		f.Reset(testISN, DefaultMaxBytes)
		f.Feed(testISN, true, nil)
		for _, sg := range segs {
			f.Feed(sg.seq, false, sg.payload)
		}
		if f.res.Status != want {
			b.Fatalf("status %v, want %v: %+v", f.res.Status, want, f.res)
		}
	}
}
