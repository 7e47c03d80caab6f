package classify

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
)

// Seeds shared by the fuzz targets: whole flow heads (streams from ISN+1).
func seedStreams(f *testing.F) map[string][]byte {
	f.Helper()
	s := map[string][]byte{
		// RFC 8448 §3 ClientHello in its one record.
		"rfc8448": loadHexFixture(f, "testdata/rfc8448-s3-clienthello.hex").stream(),
		// A built hello spread over 5 records, with SNI, ALPN and ECH.
		"5 records": records(helloSpec{sessionID: make([]byte, 32),
			exts: []tlsExt{sniExt("www.example.test"), alpnExt("h2", "http/1.1"), echExt()}}.msg(), 7, 20, 20, 30),
		// A TLS 1.0-form hello without extensions.
		"no extensions": records(helloSpec{noExts: true, version: 0x0301}.msg()),
		// Two host_names (malformed), for mutations around the SNI list.
		"two host_names": records(helloSpec{exts: []tlsExt{sniExt("a.example.test", "b.example.test")}}.msg()),
		// HTTP heads: origin-form, absolute-form, CONNECT, HTTP/1.0 without
		// Host, and a malformed one with two Hosts.
		"http get":     []byte("GET /x HTTP/1.1\r\nHost: www.example.test\r\nAccept: */*\r\n\r\n"),
		"http abs":     []byte("GET http://a.example.test:8080/ HTTP/1.1\r\nHost: A.example.test\r\n\r\nbody"),
		"http connect": []byte("CONNECT t.example.test:443 HTTP/1.1\r\nHost: t.example.test:443\r\n\r\n"),
		"http 1.0":     []byte("HEAD / HTTP/1.0\r\nX: y\r\n\r\n"),
		"http 2 hosts": []byte("GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n"),
		// The HTTP/2 preface.
		"h2 preface": []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
	}
	// The recorded clients (curl, openssl, Go, Chromium; curl over HTTP).
	paths, _ := filepath.Glob(tcpPcapGlob)
	for _, p := range paths {
		s[filepath.Base(p)] = loadPcapFixture(f, p).stream()
	}
	return s
}

// defragment returns the handshake bytes of the TLS records at the start
// of stream (a reading of its own, for checking names against).
func defragment(stream []byte) []byte {
	var out []byte
	for len(stream) >= 5 {
		n := int(stream[3])<<8 | int(stream[4])
		stream = stream[5:]
		out = append(out, stream[:min(n, len(stream))]...)
		stream = stream[min(n, len(stream)):]
	}
	return out
}

// nameIn reports whether name, as normalised, is in b: the bytes of b
// lowercased contain it.
func nameIn(name string, b []byte) bool {
	return bytes.Contains(bytes.ToLower(b), []byte(name))
}

// definitive reports whether err decides a flow (not "need more").
func definitive(err error) bool { return err != nil && err != ErrTruncated }

func FuzzParseClientHello(f *testing.F) {
	for _, s := range seedStreams(f) {
		if len(s) > 5 && s[0] == contentHandshake {
			f.Add(defragment(s)) // the handshake message without its records
		}
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		h, err := ParseClientHello(msg)
		half, herr := ParseClientHello(msg[:len(msg)/2])
		if herr == nil {
			t.Fatalf("half of the input parsed as a hello: %+v", half)
		}
		if definitive(herr) && err == nil {
			t.Fatalf("a prefix was refused (%v) but the whole parsed", herr)
		}
		if err != nil {
			return
		}
		if h.Len != len(msg) {
			t.Fatalf("Len %d, input %d", h.Len, len(msg))
		}
		if _, err := ParseClientHello(msg[:len(msg)-1]); err != ErrTruncated {
			t.Fatalf("the hello less its last byte: %v, want ErrTruncated", err)
		}
		if h.SNI && !nameIn(string(h.ServerName()), msg) {
			t.Fatalf("name %q is not in the input", h.ServerName())
		}
		// Round trip: a hello built from what was read reads the same.
		var exts []tlsExt
		var alpn []string
		for p := range h.ALPN() {
			alpn = append(alpn, string(p))
		}
		if h.SNI {
			exts = append(exts, sniExt(string(h.ServerName())))
		}
		if alpn != nil {
			exts = append(exts, alpnExt(alpn...))
		}
		if h.ECH {
			exts = append(exts, echExt())
		}
		h2, err := ParseClientHello(helloSpec{version: h.Version, exts: exts}.msg())
		if err != nil || h2.SNI != h.SNI || h2.ECH != h.ECH || !bytes.Equal(h2.ServerName(), h.ServerName()) {
			t.Fatalf("round trip: %+v, %v; want the fields of %+v", h2, err, h)
		}
	})
}

func FuzzParseRequestHead(f *testing.F) {
	for _, s := range seedStreams(f) {
		if len(s) > 0 && firstByteKind(s[0]) == kindHTTP {
			f.Add(s)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequestHead(b)
		if _, herr := ParseRequestHead(b[:len(b)/2]); definitive(herr) && err == nil {
			t.Fatalf("a prefix was refused (%v) but the whole parsed", herr)
		}
		if err != nil {
			return
		}
		if r.Len > len(b) || r.Len < 4 || string(b[r.Len-4:r.Len]) != "\r\n\r\n" {
			t.Fatalf("Len %d does not end a head in %q", r.Len, b)
		}
		if _, err := ParseRequestHead(b[:r.Len-1]); err != ErrTruncated {
			t.Fatalf("the head less its last byte: %v, want ErrTruncated", err)
		}
		if n := r.Name(); len(n) > 0 && !nameIn(string(n), b[:r.Len]) {
			t.Fatalf("name %q is not in the head", n)
		}
	})
}

// FuzzReassembly feeds the reassembler segments cut from a stream by a
// plan (pairs of start, length), one of them possibly lying about one byte,
// and checks it against a model: the bytes it holds are the stream's, it
// holds exactly what the segments covered, and a lie is caught exactly
// when another segment covers the lied-about byte.
func FuzzReassembly(f *testing.F) {
	for name, s := range seedStreams(f) {
		switch name {
		case "rfc8448", "tcp-go-tls.pcap", "http get":
			// In order; overlapping retransmissions; a lie inside an overlap.
			f.Add(s, []byte{0, 60, 60, 255, 255, 255}, uint16(0))
			f.Add(s, []byte{10, 90, 0, 50, 40, 30, 200, 10}, uint16(0))
			f.Add(s, []byte{0, 100, 50, 100}, uint16(1+60))
		}
	}
	f.Fuzz(func(t *testing.T, stream, plan []byte, lie uint16) {
		if len(stream) == 0 || len(stream) > 4096 || len(plan) > 128 {
			return
		}
		type piece struct{ start, end int }
		var pieces []piece
		for i := 0; i+1 < len(plan); i += 2 {
			start := int(plan[i]) * len(stream) / 256
			end := min(len(stream), start+1+int(plan[i+1])*len(stream)/256)
			pieces = append(pieces, piece{start, end})
		}
		if len(pieces) == 0 {
			return
		}
		// lie = 0: all truthful; else piece 0 lies at offset (lie-1) inside it.
		liePos := -1
		if lie > 0 {
			liePos = pieces[0].start + int(lie-1)%(pieces[0].end-pieces[0].start)
		}
		var r reassembler
		r.reset(len(stream))
		defer r.release()
		held := make([]bool, len(stream))
		var err error
		for i, p := range pieces {
			b := bytes.Clone(stream[p.start:p.end])
			if i == 0 && liePos >= 0 {
				b[liePos-p.start] ^= 0xff
			}
			if err = r.add(p.start, b); err != nil {
				break
			}
			for j := p.start; j < p.end; j++ {
				held[j] = true
			}
		}
		if errors.Is(err, ErrLimit) {
			return // too many holes: the model does not follow further
		}
		coveredTwice := false
		if liePos >= 0 {
			for _, p := range pieces[1:] {
				coveredTwice = coveredTwice || p.start <= liePos && liePos < p.end
			}
		}
		if coveredTwice != (err != nil) {
			t.Fatalf("lie at %d covered again: %v; add: %v", liePos, coveredTwice, err)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			return
		}
		n := 0
		for n < len(held) && held[n] {
			n++
		}
		if got := r.contiguous(); got != n {
			t.Fatalf("contiguous = %d, model %d", got, n)
		}
		// The buffer holds the bytes held, in the class that holds them,
		// and never more than the limit.
		if c := r.capacity(); !capacityFits(c, r.held, len(stream)) {
			t.Fatalf("buffer of %d bytes for %d held, limit %d", c, r.held, len(stream))
		}
		got, have := unpacked(t, &r)
		if !bytes.Equal(r.prefix(), got[:n]) {
			t.Fatalf("prefix %x, held %x", r.prefix(), got[:n])
		}
		for j, h := range held {
			if h != have[j] {
				t.Fatalf("byte %d held %v, model %v", j, have[j], h)
			}
			if h && j != liePos && got[j] != stream[j] {
				t.Fatalf("byte %d = %#x, want %#x", j, got[j], stream[j])
			}
		}
	})
}

// FuzzTCPFlow runs a flow head through TCPFlow whole, cut in three in
// order, and cut in three in reverse, and checks that all three decide
// alike and that a name is always in the bytes.
func FuzzTCPFlow(f *testing.F) {
	for _, s := range seedStreams(f) {
		f.Add(s, uint16(len(s)/3), uint16(2*len(s)/3), uint16(0))
		f.Add(s, uint16(1), uint16(len(s)-1), uint16(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, stream []byte, c1, c2, maxBytes uint16) {
		if len(stream) == 0 {
			return
		}
		limit := 0 // DefaultMaxBytes
		if maxBytes > 0 {
			limit = 64 + int(maxBytes)%4096
		}
		a, b := int(c1)%len(stream), int(c2)%len(stream)
		a, b = min(a, b), max(a, b)
		whole, _ := feed(t, testISN, limit, cut(testISN, stream))
		split := cut(testISN, stream, a, b)
		inOrder, _ := feed(t, testISN, limit, split)
		for i, j := 0, len(split)-1; i < j; i, j = i+1, j-1 {
			split[i], split[j] = split[j], split[i]
		}
		reversed, _ := feed(t, testISN, limit, split)
		for _, r := range []Result{whole, inOrder, reversed} {
			if r.Status != whole.Status || r.Name != whole.Name || r.ECH != whole.ECH || r.From != whole.From {
				t.Fatalf("whole %+v, in order %+v, reversed %+v (cuts %d %d)", whole, inOrder, reversed, a, b)
			}
			if r.Status == Denied && !(errors.Is(r.Err, ErrMalformed) || errors.Is(r.Err, ErrNotTLS) || errors.Is(r.Err, ErrLimit)) {
				t.Fatalf("denied for %v, not a deny reason", r.Err)
			}
		}
		if whole.Name == "" {
			return
		}
		src := stream
		if whole.From == SourceSNI {
			src = defragment(stream)
		}
		if !nameIn(whole.Name, src) {
			t.Fatalf("name %q is not in the input", whole.Name)
		}
	})
}
