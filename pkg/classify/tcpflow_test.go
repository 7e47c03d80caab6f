package classify

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// outcome is what a test compares of a Result: the error reduced to its
// sentinel.
type outcome struct {
	Status Status
	Name   string
	From   Source
	ECH    bool
	Err    error
}

var sentinels = []error{ErrMalformed, ErrNotTLS, ErrLimit, ErrTruncated}

func outcomeOf(r Result) outcome {
	o := outcome{Status: r.Status, Name: r.Name, From: r.From, ECH: r.ECH}
	for _, s := range sentinels {
		if errors.Is(r.Err, s) {
			o.Err = s
			break
		}
	}
	if r.Err != nil && o.Err == nil {
		o.Err = r.Err
	}
	return o
}

func named(name string, from Source) outcome { return outcome{Status: Done, Name: name, From: from} }
func denied(err error) outcome               { return outcome{Status: Denied, Err: err} }

var needMore = outcome{}

// sentinelComparer compares errors by identity (they are sentinels here).
var sentinelComparer = cmp.Comparer(func(a, b error) bool { return a == b })

const testISN = 0xffffff9b // the stream wraps at offset 100

// seg makes a segment of stream bytes at offset off from ISN+1.
func seg(isn uint32, off int, b []byte) segment {
	return segment{seq: isn + 1 + uint32(off), payload: b}
}

// cut splits stream at the given offsets into in-order segments.
func cut(isn uint32, stream []byte, at ...int) []segment {
	var segs []segment
	prev := 0
	for _, a := range append(at, len(stream)) {
		if a > prev {
			segs = append(segs, seg(isn, prev, stream[prev:a]))
		}
		prev = a
	}
	return segs
}

// feed runs segments through a fresh TCPFlow (SYN first) and returns the
// final Result and the flow (released by t.Cleanup).
func feed(t testing.TB, isn uint32, maxBytes int, segs []segment) (Result, *TCPFlow) {
	t.Helper()
	var f TCPFlow
	f.Reset(isn, maxBytes)
	t.Cleanup(f.Release)
	r := f.Feed(isn, true, nil)
	for _, s := range segs {
		r = f.Feed(s.seq, s.syn, s.payload)
	}
	return r, &f
}

// checkFeed feeds segs and compares the outcome with want.
func checkFeed(t *testing.T, isn uint32, maxBytes int, segs []segment, want outcome) {
	t.Helper()
	r, _ := feed(t, isn, maxBytes, segs)
	if diff := cmp.Diff(want, outcomeOf(r), sentinelComparer); diff != "" {
		t.Errorf("(-want +got):\n%s\nerr: %v", diff, r.Err)
	}
}

// flowFixture is a recorded or transcribed flow head with its expected
// result.
type flowFixture struct {
	fixture
	want outcome
	alpn []string
}

// recorded lists the captures of real clients in testdata/ (made by
// test/record-clients.sh) and what each must yield.
var recorded = map[string]struct {
	want outcome
	alpn []string
}{
	"tcp-curl-tls.pcap":     {named("curl.example.test", SourceSNI), []string{"h2", "http/1.1"}},
	"tcp-curl-http.pcap":    {named("plain.example.test", SourceHost), nil},
	"tcp-openssl-tls.pcap":  {named("openssl.example.test", SourceSNI), nil},
	"tcp-go-tls.pcap":       {named("go.example.test", SourceSNI), nil},
	"tcp-chromium-tls.pcap": {outcome{Status: Done, Name: "chromium.example.test", From: SourceSNI, ECH: true}, []string{"h2", "http/1.1"}},
}

func loadFixtures(t *testing.T) []flowFixture {
	t.Helper()
	fx := loadHexFixture(t, "testdata/rfc8448-s3-clienthello.hex")
	all := []flowFixture{{fixture: fx, want: named("server", SourceSNI)}}
	paths, err := filepath.Glob(tcpPcapGlob)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		exp, ok := recorded[filepath.Base(p)]
		if !ok {
			t.Fatalf("%s: no expected result in the recorded table", p)
		}
		all = append(all, flowFixture{fixture: loadPcapFixture(t, p), want: exp.want, alpn: exp.alpn})
	}
	for name := range recorded {
		if !slices.ContainsFunc(paths, func(p string) bool { return filepath.Base(p) == name }) {
			t.Errorf("testdata/%s is missing: run test/record-clients.sh", name)
		}
	}
	return all
}

func TestFixtures(t *testing.T) {
	for _, fx := range loadFixtures(t) {
		t.Run(filepath.Base(fx.name), func(t *testing.T) {
			stream := fx.stream()
			t.Run("as captured", func(t *testing.T) {
				r, f := feed(t, fx.isn, DefaultMaxBytes, fx.segs)
				if diff := cmp.Diff(fx.want, outcomeOf(r), sentinelComparer); diff != "" {
					t.Fatalf("(-want +got):\n%s\nerr: %v", diff, r.Err)
				}
				if fx.want.From == SourceSNI {
					h, ok := f.ClientHello()
					if !ok {
						t.Fatal("no ClientHello on a TLS flow")
					}
					var alpn []string
					for p := range h.ALPN() {
						alpn = append(alpn, string(p))
					}
					if diff := cmp.Diff(fx.alpn, alpn); diff != "" {
						t.Errorf("ALPN (-want +got):\n%s", diff)
					}
				}
			})
			t.Run("split in two", func(t *testing.T) {
				for i := 1; i < len(stream); i++ {
					segs := cut(testISN, stream, i)
					for _, order := range []string{"in order", "reversed"} {
						if order == "reversed" {
							slices.Reverse(segs)
						}
						r, _ := feed(t, testISN, DefaultMaxBytes, segs)
						if diff := cmp.Diff(fx.want, outcomeOf(r), sentinelComparer); diff != "" {
							t.Fatalf("cut at %d, %s (-want +got):\n%s\nerr: %v", i, order, diff, r.Err)
						}
					}
				}
			})
			t.Run("permuted with retransmissions", func(t *testing.T) {
				rng := rand.New(rand.NewPCG(4, uint64(len(stream))))
				for trial := range 200 {
					segs := permuted(rng, stream)
					r, _ := feed(t, testISN, DefaultMaxBytes, segs)
					if diff := cmp.Diff(fx.want, outcomeOf(r), sentinelComparer); diff != "" {
						t.Fatalf("trial %d (-want +got):\n%s\nerr: %v", trial, diff, r.Err)
					}
				}
			})
			t.Run("truncated", func(t *testing.T) {
				for i := range len(stream) {
					// In one piece, and in 1-byte-apart pieces' worth of halves.
					for _, segs := range [][]segment{cut(testISN, stream[:i]), cut(testISN, stream[:i], i/2)} {
						r, _ := feed(t, testISN, DefaultMaxBytes, segs)
						if r.Status != NeedMore {
							t.Fatalf("first %d of %d bytes: %v %q %v, want need-more", i, len(stream), r.Status, r.Name, r.Err)
						}
					}
				}
			})
			t.Run("overlap disagrees", func(t *testing.T) {
				// A holds [0, m), B holds [j, end); they overlap on [j, m).
				// A byte of B inside the overlap is changed.
				m := len(stream) / 2
				j := m / 2
				for p := j; p < m; p += max(1, (m-j)/16) {
					b := slices.Clone(stream[j:])
					b[p-j] ^= 0x20
					a := seg(testISN, 0, stream[:m])
					bs := seg(testISN, j, b)
					checkFeed(t, testISN, DefaultMaxBytes, []segment{a, bs}, denied(ErrMalformed))
					checkFeed(t, testISN, DefaultMaxBytes, []segment{bs, a}, denied(ErrMalformed))
				}
			})
		})
	}
}

// permuted cuts stream into 3 to 8 segments at random, adds identical
// retransmissions of some of them and a repacketised copy (two neighbours
// as one segment), and shuffles the lot.
func permuted(rng *rand.Rand, stream []byte) []segment {
	k := 3 + rng.IntN(6)
	cuts := map[int]bool{}
	for len(cuts) < k-1 && len(cuts) < len(stream)-1 {
		cuts[1+rng.IntN(len(stream)-1)] = true
	}
	at := make([]int, 0, len(cuts))
	for c := range cuts {
		at = append(at, c)
	}
	slices.Sort(at)
	segs := cut(testISN, stream, at...)
	n := len(segs)
	for range rng.IntN(4) {
		segs = append(segs, segs[rng.IntN(n)])
	}
	if n >= 2 {
		i := rng.IntN(n - 1)
		start := int(segs[i].seq - (testISN + 1))
		end := int(segs[i+1].seq-(testISN+1)) + len(segs[i+1].payload)
		segs = append(segs, seg(testISN, start, stream[start:end]))
	}
	rng.Shuffle(len(segs), func(a, b int) { segs[a], segs[b] = segs[b], segs[a] })
	return segs
}

func TestTCPFlowTLS(t *testing.T) {
	rfc := loadHexFixture(t, "testdata/rfc8448-s3-clienthello.hex").stream()
	rfcMsg := rfc[5:]
	hello := helloSpec{exts: []tlsExt{sniExt("www.example.test"), alpnExt("h2")}}.msg()
	big := helloSpec{exts: []tlsExt{sniExt("big.example.test"), {0x0015, make([]byte, 20000)}}}.msg()
	withRecord := func(typ uint8, version uint16, n int, body []byte) []byte {
		return append(recordHeader(typ, version, n), body...)
	}
	tests := []struct {
		name     string
		isn      uint32 // 0 means testISN
		maxBytes int
		segs     []segment
		want     outcome
	}{
		{name: "one record one segment", segs: cut(testISN, records(hello)), want: named("www.example.test", SourceSNI)},
		{name: "rfc8448 over 5 records", segs: cut(testISN, records(rfcMsg, 1, 3, 40, 100)), want: named("server", SourceSNI)},
		{name: "5 records cut across headers", segs: cut(testISN, records(hello, 2, 2, 2, 2), 3, 7, 8, 9, 15, 16, 40), want: named("www.example.test", SourceSNI)},
		{name: "hello in the SYN (TFO)", segs: []segment{{seq: testISN, syn: true, payload: records(hello)}}, want: named("www.example.test", SourceSNI)},
		{name: "TFO SYN then the rest", segs: []segment{{seq: testISN, syn: true, payload: records(hello)[:20]}, seg(testISN, 20, records(hello)[20:])}, want: named("www.example.test", SourceSNI)},
		{name: "wrapped sequence numbers", isn: 0xfffffff0, segs: cut(0xfffffff0, records(hello), 8, 30), want: named("www.example.test", SourceSNI)},
		{name: "no sni", segs: cut(testISN, records(helloSpec{exts: []tlsExt{alpnExt("h2")}}.msg())), want: outcome{Status: Done}},
		{name: "ech outer name", segs: cut(testISN, records(helloSpec{exts: []tlsExt{sniExt("public.example.test"), echExt()}}.msg())), want: outcome{Status: Done, Name: "public.example.test", From: SourceSNI, ECH: true}},
		{name: "identical retransmission", segs: []segment{seg(testISN, 0, records(hello)[:50]), seg(testISN, 0, records(hello)[:50]), seg(testISN, 50, records(hello)[50:])}, want: named("www.example.test", SourceSNI)},
		{name: "sni uppercase and trailing dot", segs: cut(testISN, records(helloSpec{exts: []tlsExt{sniExt("WWW.Example.Test.")}}.msg())), want: named("www.example.test", SourceSNI)},

		{name: "two server_name extensions", segs: cut(testISN, records(helloSpec{exts: []tlsExt{sniExt("a.example.test"), sniExt("b.example.test")}}.msg())), want: denied(ErrMalformed)},
		{name: "two host_names", segs: cut(testISN, records(helloSpec{exts: []tlsExt{sniExt("a.example.test", "b.example.test")}}.msg())), want: denied(ErrMalformed)},
		{name: "sni embedded NUL", segs: cut(testISN, records(helloSpec{exts: []tlsExt{sniExt("a.test\x00b.test")}}.msg())), want: denied(ErrMalformed)},
		{name: "sni 300 bytes", segs: cut(testISN, records(helloSpec{exts: []tlsExt{sniExt(strings.Repeat("abcde.", 50))}}.msg())), want: denied(ErrMalformed)},
		{name: "sni IP literal", segs: cut(testISN, records(helloSpec{exts: []tlsExt{sniExt("198.18.0.1")}}.msg())), want: denied(ErrMalformed)},
		{name: "record length too long", segs: cut(testISN, withRecord(22, 0x0301, len(hello)+10, append(slices.Clone(hello), make([]byte, 10)...))), want: denied(ErrMalformed)},
		{name: "record length too long, tail not sent yet", segs: cut(testISN, withRecord(22, 0x0301, len(hello)+10, hello)), want: denied(ErrMalformed)},
		{name: "record length too short", segs: cut(testISN, withRecord(22, 0x0301, len(hello)-10, hello)), want: denied(ErrNotTLS)},
		{name: "handshake length longer than content", segs: cut(testISN, records(func() []byte {
			m := slices.Clone(hello)
			m[3] += 10
			return append(m, make([]byte, 10)...)
		}())), want: denied(ErrMalformed)},
		{name: "handshake length shorter than content", segs: cut(testISN, records(func() []byte {
			m := slices.Clone(hello)
			m[3] -= 10
			return m
		}())), want: denied(ErrMalformed)},
		{name: "zero-length record", segs: cut(testISN, append(recordHeader(22, 0x0301, 0), records(hello)...)), want: denied(ErrMalformed)},
		{name: "record over 2^14", segs: cut(testISN, recordHeader(22, 0x0301, 1<<14+1)), want: denied(ErrMalformed)},
		{name: "record version 0x0300", segs: cut(testISN, withRecord(22, 0x0300, len(hello), hello)), want: denied(ErrMalformed)},
		{name: "record version 0x0304", segs: cut(testISN, withRecord(22, 0x0304, len(hello), hello)), want: denied(ErrMalformed)},
		{name: "alert record first", segs: cut(testISN, withRecord(21, 0x0303, 2, []byte{2, 40})), want: denied(ErrNotTLS)},
		{name: "application data first", segs: cut(testISN, withRecord(23, 0x0303, 3, []byte{1, 2, 3})), want: denied(ErrNotTLS)},
		{name: "change_cipher_spec between hello records", segs: cut(testISN, func() []byte {
			r := records(hello, 20)
			return slices.Concat(r[:25], withRecord(20, 0x0303, 1, []byte{1}), r[25:])
		}()), want: denied(ErrNotTLS)},
		{name: "SSLv2 hello", segs: cut(testISN, []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15}), want: denied(ErrNotTLS)},
		{name: "0x16 then not a version", segs: cut(testISN, []byte{0x16, 0x00, 0x01}), want: denied(ErrNotTLS)},
		{name: "server hello from the client", segs: cut(testISN, records(handshakeMsg(2, helloSpec{}.body()))), want: denied(ErrMalformed)},
		{name: "hello larger than max_bytes, decided on its header", segs: cut(testISN, records(big, 16000)[:20]), want: denied(ErrLimit)},
		{name: "hello fits a raised max_bytes", maxBytes: 32768, segs: cut(testISN, records(big, 16000, 16000), 1000, 9000, 17000), want: named("big.example.test", SourceSNI)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isn := tt.isn
			if isn == 0 {
				isn = testISN
			}
			checkFeed(t, isn, tt.maxBytes, tt.segs, tt.want)
		})
	}
}

func TestTCPFlowHTTP(t *testing.T) {
	get := "GET /index.html HTTP/1.1\r\nUser-Agent: t\r\nHost: www.example.test\r\nAccept: */*\r\n\r\n"
	tests := []struct {
		name string
		head string
		want outcome
	}{
		{name: "get", head: get, want: named("www.example.test", SourceHost)},
		{name: "host case and port", head: "GET / HTTP/1.1\r\nhOsT:  WWW.Example.Test.:8080 \r\n\r\n", want: named("www.example.test", SourceHost)},
		{name: "body after the head", head: "POST /x HTTP/1.1\r\nHost: a.example.test\r\nContent-Length: 3\r\n\r\nabc", want: named("a.example.test", SourceHost)},
		{name: "absolute-form matching Host", head: "GET http://A.example.test:80/x?y HTTP/1.1\r\nHost: a.example.test\r\n\r\n", want: named("a.example.test", SourceHost)},
		{name: "absolute-form https no path", head: "GET https://a.example.test HTTP/1.1\r\nHost: a.example.test:443\r\n\r\n", want: named("a.example.test", SourceHost)},
		{name: "absolute-form HTTP/1.0 without Host", head: "GET http://a.example.test/ HTTP/1.0\r\n\r\n", want: named("a.example.test", SourceHost)},
		{name: "CONNECT takes the authority", head: "CONNECT tunnel.example.test:443 HTTP/1.1\r\nHost: tunnel.example.test:443\r\n\r\n", want: named("tunnel.example.test", SourceHost)},
		{name: "OPTIONS *", head: "OPTIONS * HTTP/1.1\r\nHost: a.example.test\r\n\r\n", want: named("a.example.test", SourceHost)},
		{name: "HTTP/1.0 without Host: no name", head: "GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", want: outcome{Status: Done}},
		{name: "empty Host: no name", head: "GET / HTTP/1.1\r\nHost:\r\n\r\n", want: outcome{Status: Done}},
		{name: "Host IPv4: no name", head: "GET / HTTP/1.1\r\nHost: 198.18.0.1:80\r\n\r\n", want: outcome{Status: Done}},
		{name: "Host IPv6: no name", head: "GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", want: outcome{Status: Done}},
		{name: "Host: inside a header value", head: "GET / HTTP/1.1\r\nX-Note: Host: evil.example.test\r\nHost: good.example.test\r\n\r\n", want: named("good.example.test", SourceHost)},
		{name: "obs-text in another field", head: "GET / HTTP/1.1\r\nX-Name: caf\xc3\xa9\r\nHost: a.example.test\r\n\r\n", want: named("a.example.test", SourceHost)},

		{name: "two Host headers", head: "GET / HTTP/1.1\r\nHost: a.example.test\r\nHost: b.example.test\r\n\r\n", want: denied(ErrMalformed)},
		{name: "two equal Host headers", head: "GET / HTTP/1.1\r\nHost: a.example.test\r\nhost: a.example.test\r\n\r\n", want: denied(ErrMalformed)},
		{name: "Host vs absolute URI mismatch", head: "GET http://a.example.test/ HTTP/1.1\r\nHost: b.example.test\r\n\r\n", want: denied(ErrMalformed)},
		{name: "Host IP vs absolute URI name", head: "GET http://a.example.test/ HTTP/1.1\r\nHost: 198.18.0.1\r\n\r\n", want: denied(ErrMalformed)},
		{name: "CONNECT authority vs Host mismatch", head: "CONNECT a.example.test:443 HTTP/1.1\r\nHost: b.example.test:443\r\n\r\n", want: denied(ErrMalformed)},
		{name: "CONNECT without port", head: "CONNECT a.example.test HTTP/1.1\r\nHost: a.example.test\r\n\r\n", want: denied(ErrMalformed)},
		{name: "space before colon", head: "GET / HTTP/1.1\r\nHost : a.example.test\r\n\r\n", want: denied(ErrMalformed)},
		{name: "space inside field name", head: "GET / HTTP/1.1\r\nX Foo: 1\r\nHost: a.example.test\r\n\r\n", want: denied(ErrMalformed)},
		{name: "LF-only line endings", head: "GET / HTTP/1.1\nHost: a.example.test\n\n", want: denied(ErrMalformed)},
		{name: "LF-only blank line", head: "GET / HTTP/1.1\r\nHost: a.example.test\r\n\n", want: denied(ErrMalformed)},
		{name: "bare CR", head: "GET / HTTP/1.1\r\nHost: a.example.test\rX: y\r\n\r\n", want: denied(ErrMalformed)},
		{name: "NUL in value", head: "GET / HTTP/1.1\r\nHost: a.example.test\x00.evil.test\r\n\r\n", want: denied(ErrMalformed)},
		{name: "obs-fold", head: "GET / HTTP/1.1\r\nX: a\r\n b\r\nHost: a.example.test\r\n\r\n", want: denied(ErrMalformed)},
		{name: "obs-fold of Host", head: "GET / HTTP/1.1\r\nHost: a.example.test\r\n evil.test\r\n\r\n", want: denied(ErrMalformed)},
		{name: "userinfo in Host", head: "GET / HTTP/1.1\r\nHost: a.example.test@b.example.test\r\n\r\n", want: denied(ErrMalformed)},
		{name: "userinfo in absolute URI", head: "GET http://u@a.example.test/ HTTP/1.1\r\nHost: a.example.test\r\n\r\n", want: denied(ErrMalformed)},
		{name: "HTTP/1.1 without Host", head: "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", want: denied(ErrMalformed)},
		{name: "port out of range", head: "GET / HTTP/1.1\r\nHost: a.example.test:65536\r\n\r\n", want: denied(ErrMalformed)},
		{name: "empty port", head: "GET / HTTP/1.1\r\nHost: a.example.test:\r\n\r\n", want: denied(ErrMalformed)},
		{name: "two spaces in request line", head: "GET  / HTTP/1.1\r\nHost: a.example.test\r\n\r\n", want: denied(ErrMalformed)},
		{name: "fragment in target", head: "GET /#x HTTP/1.1\r\nHost: a.example.test\r\n\r\n", want: denied(ErrMalformed)},
		{name: "ftp absolute URI", head: "GET ftp://a.example.test/ HTTP/1.1\r\nHost: a.example.test\r\n\r\n", want: denied(ErrMalformed)},
		{name: "asterisk with GET", head: "GET * HTTP/1.1\r\nHost: a.example.test\r\n\r\n", want: denied(ErrMalformed)},
		{name: "HTTP/2 preface", head: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", want: denied(ErrNotTLS)},
		{name: "HTTP/2.0 version", head: "GET / HTTP/2.0\r\nHost: a.example.test\r\n\r\n", want: denied(ErrNotTLS)},
		{name: "HTTP/0.9", head: "GET /\r\n", want: denied(ErrNotTLS)},
		{name: "unknown method", head: "PROPFIND / HTTP/1.1\r\nHost: a.example.test\r\n\r\n", want: denied(ErrNotTLS)},
		{name: "lowercase method", head: "get / HTTP/1.1\r\nHost: a.example.test\r\n\r\n", want: denied(ErrNotTLS)},
		{name: "SSH banner", head: "SSH-2.0-OpenSSH_9.2\r\n", want: denied(ErrNotTLS)},
		{name: "leading empty line", head: "\r\nGET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n", want: denied(ErrNotTLS)},
		{name: "head over max_bytes", head: "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", DefaultMaxBytes) + "\r\nHost: a.example.test\r\n\r\n", want: denied(ErrLimit)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.head)
			checkFeed(t, testISN, 0, cut(testISN, b), tt.want)
			// One byte per segment decides the same, as early as it can.
			at := make([]int, 0, len(b))
			for i := 1; i < len(b); i++ {
				at = append(at, i)
			}
			checkFeed(t, testISN, 0, cut(testISN, b, at...), tt.want)
		})
	}
}

func TestTCPFlowSegments(t *testing.T) {
	hello := records(helloSpec{exts: []tlsExt{sniExt("www.example.test")}}.msg())
	name := named("www.example.test", SourceSNI)
	tests := []struct {
		name string
		segs []segment
		want outcome
	}{
		{name: "SYN of another ISN", segs: []segment{{seq: testISN + 7, syn: true}}, want: denied(ErrMalformed)},
		{name: "payload wholly before ISN+1", segs: []segment{{seq: testISN - 10, payload: hello[:5]}}, want: denied(ErrMalformed)},
		{name: "payload straddling ISN+1", segs: []segment{{seq: testISN, payload: hello}}, want: denied(ErrMalformed)},
		{name: "segment past max_bytes is ignored", segs: []segment{seg(testISN, DefaultMaxBytes, []byte("x")), seg(testISN, 0, hello)}, want: name},
		{name: "segment straddling max_bytes is clipped", segs: []segment{seg(testISN, DefaultMaxBytes-2, []byte("xyzw")), seg(testISN, 0, hello)}, want: name},
		{name: "pure ACKs and a FIN", segs: []segment{seg(testISN, 0, nil), seg(testISN, 0, hello[:9]), seg(testISN, 9, nil)}, want: needMore},
		{name: "retransmission that disagrees", segs: []segment{seg(testISN, 0, hello[:30]), seg(testISN, 10, []byte("different bytes here"))}, want: denied(ErrMalformed)},
		{name: "retransmission extending further", segs: []segment{seg(testISN, 0, hello[:30]), seg(testISN, 20, hello[20:])}, want: name},
		{name: "data after the decision is ignored", segs: []segment{seg(testISN, 0, hello), seg(testISN, 0, []byte("garbage"))}, want: name},
		{name: "first byte decides", segs: []segment{seg(testISN, 0, []byte{0x00})}, want: denied(ErrNotTLS)},
		{name: "too many holes", segs: func() []segment {
			var s []segment
			for i := range maxSpans + 1 {
				s = append(s, seg(testISN, 10+2*i, []byte{'x'}))
			}
			return s
		}(), want: denied(ErrLimit)},
		{name: "as many holes as allowed, then filled", segs: func() []segment {
			var s []segment
			for i := range maxSpans {
				s = append(s, seg(testISN, 1+2*i, hello[1+2*i:2+2*i]))
			}
			return append(s, seg(testISN, 0, hello))
		}(), want: name},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFeed(t, testISN, 0, tt.segs, tt.want)
		})
	}
}

func TestTCPFlowLifecycle(t *testing.T) {
	hello := records(helloSpec{exts: []tlsExt{sniExt("www.example.test")}}.msg())
	var f TCPFlow
	if r := f.Feed(1, true, nil); r.Status != Denied {
		t.Errorf("Feed on a zero TCPFlow = %v, want denied", r.Status)
	}
	f.Reset(testISN, 0)
	if r := f.Feed(testISN, true, nil); r.Status != NeedMore || f.Capacity() != 0 {
		t.Fatalf("after the SYN: %v, buffer of %d bytes; want need-more and no buffer", r.Status, f.Capacity())
	}
	r := f.Feed(testISN+1, false, hello)
	if diff := cmp.Diff(named("www.example.test", SourceSNI), outcomeOf(r), sentinelComparer); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	f.Release()
	if got := f.Feed(testISN+1, false, []byte("x")); got != r {
		t.Errorf("Feed after Release on a decided flow = %+v, want %+v", got, r)
	}
	// Reset for a flow decided on its first byte: no buffer taken.
	f.Reset(7, 0)
	if r := f.Feed(8, false, []byte("\x00\x01")); r.Status != Denied || f.Capacity() != 0 {
		t.Errorf("first byte 0x00: %v, buffer of %d bytes; want denied without a buffer", r.Status, f.Capacity())
	}
	// An undecided flow, released, refuses further segments.
	f.Reset(7, 0)
	f.Feed(8, false, hello[:10])
	f.Release()
	if r := f.Feed(18, false, hello[10:]); r.Status != Denied {
		t.Errorf("Feed after Release on an undecided flow = %v, want denied", r.Status)
	}
}

func ExampleTCPFlow() {
	head := []byte("GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
	var f TCPFlow
	f.Reset(1000, 16384)
	defer f.Release()
	fmt.Println(f.Feed(1000, true, nil).Status) // the SYN
	fmt.Println(f.Feed(1001, false, head[:10]).Status)
	r := f.Feed(1011, false, head[10:])
	fmt.Println(r.Status, r.Name, r.From)
	// Output:
	// need-more
	// need-more
	// done www.example.test host
}

// growthStreams are flow heads that cross several buffer classes: a
// ClientHello in one record and in three (its handshake bytes then take a
// buffer of their own), and HTTP heads whose name is read early (Host
// right after the request line, an absolute-form target) so that the
// reader holds it while the buffer grows.
func growthStreams(name string) map[string][]byte {
	pad := strings.Repeat("p", 3000)
	hello := helloSpec{exts: []tlsExt{sniExt(name), {0x0015, make([]byte, 4000)}}}.msg()
	return map[string][]byte{
		"tls one record":    records(hello),
		"tls three records": records(hello, 700, 1800),
		"http host first":   []byte("GET / HTTP/1.1\r\nHost: " + name + "\r\nX-Pad: " + pad + "\r\n\r\n"),
		"http absolute-form": []byte("GET http://" + name + "/" + pad + " HTTP/1.1\r\nX-Pad: " + pad +
			"\r\nHost: " + name + "\r\n\r\n"),
	}
}

// growthPlans cut a stream into segments whose order and overlaps make
// the buffer grow at awkward moments.
var growthPlans = map[string]func(s []byte) []segment{
	"in order, 100-byte segments": func(s []byte) []segment { return every(s, 100) },
	"reversed, 300-byte segments": func(s []byte) []segment { return reversed(every(s, 300)) },
	"far end first": func(s []byte) []segment {
		n := len(s) - 200
		return append([]segment{seg(testISN, n, s[n:])}, every(s[:n], 700)...)
	},
	"overlaps across class boundaries": func(s []byte) []segment {
		// [0,500) [400,1100) [1000,2100) [2000,end): each overlap holds
		// bytes from before a growth and after it.
		return []segment{seg(testISN, 0, s[:500]), seg(testISN, 400, s[400:1100]),
			seg(testISN, 1000, s[1000:2100]), seg(testISN, 2000, s[2000:])}
	},
	"a far segment grows the buffer while a record header is cut": func(s []byte) []segment {
		// 707 is inside the second record header of "tls three
		// records"; the far segment moves the buffer to 2048 bytes
		// without adding to the contiguous prefix.
		far := len(s) - 500
		return []segment{seg(testISN, 0, s[:707]), seg(testISN, far, s[far:far+400]),
			seg(testISN, 707, s[707:far]), seg(testISN, far+400, s[far+400:])}
	},
	"odd pieces first, then the even ones": func(s []byte) []segment {
		segs := every(s, 450)
		var out []segment
		for i := 1; i < len(segs); i += 2 {
			out = append(out, segs[i])
		}
		for i := 0; i < len(segs); i += 2 {
			out = append(out, segs[i])
		}
		return out
	},
}

// reversed returns segs last first.
func reversed(segs []segment) []segment {
	slices.Reverse(segs)
	return segs
}

// every cuts s into in-order segments of n bytes.
func every(s []byte, n int) []segment {
	var at []int
	for i := n; i < len(s); i += n {
		at = append(at, i)
	}
	return cut(testISN, s, at...)
}

// scribble takes every buffer out of the pools of the classes under
// DefaultMaxBytes, overwrites it and puts it back: a flow that still read
// a buffer it had given up would read this.
func scribble() {
	for k := range bufClass(DefaultMaxBytes) + 1 {
		var all []*[]byte
		for {
			p, _ := bufPools[k].Get().(*[]byte)
			if p == nil {
				break
			}
			all = append(all, p)
			for i := range *p {
				(*p)[i] = 0xee
			}
		}
		for _, p := range all {
			bufPools[k].Put(p)
		}
	}
}

// TestTCPFlowGrowth feeds heads that grow the flow's buffers through
// several size classes, out of order and with overlaps across the
// growths, to two flows in lockstep, and overwrites the pooled buffers
// after every segment: a reader that kept a slice of a buffer its flow
// outgrew would read other bytes than the flow's.
func TestTCPFlowGrowth(t *testing.T) {
	emptyPools() // what other tests left; scribble goes through all of it
	ours, theirs := growthStreams("grow.example.test"), growthStreams("other.example.test")
	for sname, stream := range ours {
		for pname, plan := range growthPlans {
			t.Run(sname+"/"+pname, func(t *testing.T) {
				from := SourceHost
				if stream[0] == contentHandshake {
					from = SourceSNI
				}
				a, b := plan(stream), plan(theirs[sname])
				var fa, fb TCPFlow
				fa.Reset(testISN, 0)
				fb.Reset(testISN, 0)
				defer fa.Release()
				defer fb.Release()
				var ra, rb Result
				for i := range max(len(a), len(b)) {
					if i < len(a) {
						ra = fa.Feed(a[i].seq, false, a[i].payload)
						scribble()
					}
					if i < len(b) {
						rb = fb.Feed(b[i].seq, false, b[i].payload)
						scribble()
					}
				}
				for _, c := range []struct {
					r    Result
					want string
				}{{ra, "grow.example.test"}, {rb, "other.example.test"}} {
					if diff := cmp.Diff(named(c.want, from), outcomeOf(c.r), sentinelComparer); diff != "" {
						t.Errorf("(-want +got):\n%s\nerr: %v", diff, c.r.Err)
					}
				}
				if fa.BufferedBytes() != len(stream) {
					t.Errorf("BufferedBytes = %d, want %d", fa.BufferedBytes(), len(stream))
				}
				msg := 0 // the handshake bytes' own buffer
				if strings.HasSuffix(sname, "three records") {
					msg = len(defragment(stream))
				}
				if c := fa.rec.buf.capacity(); !capacityFits(c, msg, DefaultMaxBytes) || msg == 0 && c != 0 {
					t.Errorf("handshake buffer of %d bytes for %d", c, msg)
				}
				if c := fa.asm.capacity(); !capacityFits(c, len(stream), DefaultMaxBytes) {
					t.Errorf("stream buffer of %d bytes for %d", c, len(stream))
				}
				if fa.Capacity() != fa.asm.capacity()+fa.rec.buf.capacity() {
					t.Errorf("Capacity = %d, not the sum of the buffers", fa.Capacity())
				}
			})
		}
	}
}

// TestTCPFlowGrowthConflict checks that a retransmission that disagrees
// inside an overlap is refused when taking it would grow the buffer, and
// when the overlap holds bytes from before a growth.
func TestTCPFlowGrowthConflict(t *testing.T) {
	stream := growthStreams("grow.example.test")["tls one record"]
	changed := func(off, end, at int) segment {
		b := slices.Clone(stream[off:end])
		b[at-off] ^= 0x20
		return seg(testISN, off, b)
	}
	for _, tt := range []struct {
		name string
		segs []segment
	}{
		{"new bytes past 512, conflict below", []segment{seg(testISN, 0, stream[:500]), changed(300, 1100, 450)}},
		{"conflict in bytes stored before a growth", []segment{seg(testISN, 0, stream[:500]), seg(testISN, 500, stream[500:1500]), changed(100, 1600, 200)}},
		{"conflict with a far span, packed", []segment{seg(testISN, 3000, stream[3000:3100]), changed(2000, 3050, 3040)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkFeed(t, testISN, 0, tt.segs, denied(ErrMalformed))
		})
	}
}

// TestTCPFlowLimitExact checks the flow-head limit at exactly max_bytes, for
// a limit that is a size class and one that is not: a head that ends at
// the limit is read, one byte more is denied, and the buffer never
// exceeds the limit.
func TestTCPFlowLimitExact(t *testing.T) {
	for _, limit := range []int{1024, 1000} {
		httpHead := func(n int) []byte {
			h := "GET / HTTP/1.1\r\nHost: limit.example.test\r\nX-Pad: "
			return []byte(h + strings.Repeat("a", n-len(h)-4) + "\r\n\r\n")
		}
		base := len(helloSpec{exts: []tlsExt{sniExt("limit.example.test"), {0x0015, nil}}}.msg())
		hello := func(n int) []byte { // a hello of n bytes in two records
			return records(helloSpec{exts: []tlsExt{sniExt("limit.example.test"), {0x0015, make([]byte, n-2*recordHeaderLen-base)}}}.msg(), 300)
		}
		tests := []struct {
			name     string
			segs     []segment
			want     outcome
			buffered int
		}{
			{"http head of max_bytes", every(httpHead(limit), 333), named("limit.example.test", SourceHost), limit},
			{"http head of max_bytes, reversed", reversed(every(httpHead(limit), 333)), named("limit.example.test", SourceHost), limit},
			{"http head of max_bytes+1", every(httpHead(limit+1), 333), denied(ErrLimit), limit},
			{"http head of max_bytes+1 in one segment", cut(testISN, httpHead(limit+1)), denied(ErrLimit), limit},
			{"tls hello ending at max_bytes", reversed(every(hello(limit), 400)), named("limit.example.test", SourceSNI), limit},
			{"tls hello ending at max_bytes+1", every(hello(limit+1), 400), denied(ErrLimit), 400},
			{"last byte under the limit alone", []segment{seg(testISN, limit-1, []byte("x"))}, needMore, 1},
			{"first byte at the limit", []segment{seg(testISN, limit, []byte("x"))}, needMore, 0},
			{"segment straddling the limit", []segment{seg(testISN, limit-2, []byte("wxyz"))}, needMore, 2},
		}
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%d/%s", limit, tt.name), func(t *testing.T) {
				r, f := feed(t, testISN, limit, tt.segs)
				if diff := cmp.Diff(tt.want, outcomeOf(r), sentinelComparer); diff != "" {
					t.Fatalf("(-want +got):\n%s\nerr: %v", diff, r.Err)
				}
				if f.BufferedBytes() != tt.buffered {
					t.Errorf("BufferedBytes = %d, want %d", f.BufferedBytes(), tt.buffered)
				}
				if c := f.asm.capacity(); !capacityFits(c, f.BufferedBytes(), limit) {
					t.Errorf("stream buffer of %d bytes for %d held, limit %d", c, f.BufferedBytes(), limit)
				}
			})
		}
	}
}

// TestTCPFlowCapacity pins what the engine accounts for the recorded
// clients' flows: the stream buffer in the class of the bytes sent, no
// second buffer for a hello in one record, nothing after Release.
func TestTCPFlowCapacity(t *testing.T) {
	for _, fx := range loadFixtures(t) {
		t.Run(filepath.Base(fx.name), func(t *testing.T) {
			n := len(fx.stream())
			_, f := feed(t, fx.isn, DefaultMaxBytes, fx.segs)
			if f.BufferedBytes() != n || !capacityFits(f.Capacity(), n, DefaultMaxBytes) {
				t.Errorf("BufferedBytes %d, Capacity %d; want %d and a buffer in its class (%d)", f.BufferedBytes(), f.Capacity(), n, minBufSize<<bufClass(n))
			}
			f.Release()
			if f.BufferedBytes() != 0 || f.Capacity() != 0 {
				t.Errorf("after Release: BufferedBytes %d, Capacity %d; want 0, 0", f.BufferedBytes(), f.Capacity())
			}
		})
	}
}
