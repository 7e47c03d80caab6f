package classify

import (
	"bytes"
	"errors"
	"testing"
)

// checkQUICResult asserts what every Result of a flow must satisfy, and
// that a decided flow keeps its Result.
func checkQUICResult(t *testing.T, f *QUICFlow, res Result) {
	t.Helper()
	switch res.Status {
	case NeedMore:
		if res.Err != nil || res.Name != "" {
			t.Fatalf("NeedMore with a name or error: %+v", res)
		}
		return
	case Done:
		if res.Err != nil {
			t.Fatalf("Done with an error: %+v", res)
		}
		if (res.Name == "") != (res.From == SourceNone) || res.Name != "" && res.From != SourceQUIC {
			t.Fatalf("Done with Name %q from %v", res.Name, res.From)
		}
		msg, err := f.clientHello()
		if err != nil || len(msg) < 4 || msg[0] != 0x01 {
			t.Fatalf("Done without a whole ClientHello in the CRYPTO stream: %x, %v", msg, err)
		}
	case Denied:
		if !errors.Is(res.Err, ErrMalformed) && !errors.Is(res.Err, ErrNotTLS) && !errors.Is(res.Err, ErrLimit) {
			t.Fatalf("Denied for %v, not one of the sentinels", res.Err)
		}
	default:
		t.Fatalf("status %v", res.Status)
	}
	if again := f.Feed(nil); again.Status != res.Status || again.Name != res.Name || again.Err != res.Err {
		t.Fatalf("a decided flow changed its Result: %+v, then %+v", res, again)
	}
}

// FuzzQUICDatagrams feeds raw bytes as one or two datagrams of a flow. The
// seeds are real protected packets, so mutations reach the header parser,
// header protection and the AEAD; FuzzQUICFrames reaches behind the AEAD.
func FuzzQUICDatagrams(f *testing.F) {
	hello := testClientHello("fuzz.example.test", 1400)
	seed := func(a, b []byte) { f.Add(a, b) }
	// The RFC 9001 and RFC 9369 client Initials, alone.
	seed(unhex(f, rfcVectors[0].packet), nil)
	seed(unhex(f, rfcVectors[1].packet), nil)
	// A ClientHello in two datagrams, in order and reversed.
	a := initialDatagram(f, 0, cryptoFrame(0, hello[:700]))
	b := initialDatagram(f, 1, cryptoFrame(700, hello[700:]))
	seed(a, b)
	seed(b, a)
	// Initial + 0-RTT + Handshake coalesced.
	seed(datagram(
		testPacket{frames: cryptoFrame(0, hello)}.seal(f),
		testPacket{typ: "0rtt", pn: 1, frames: make([]byte, 50)}.seal(f),
		testPacket{typ: "handshake", frames: make([]byte, 50)}.seal(f)), nil)
	// A Version Negotiation packet, a short header, an unknown version.
	seed([]byte{0x80, 0, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 1}, nil)
	seed(append([]byte{0x40}, make([]byte, 40)...), nil)
	seed([]byte{0xc0, 0xfa, 0xce, 0xb0, 0x0c, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x41, 0}, nil)
	// A truncated Initial.
	seed(unhex(f, rfcVectors[0].packet)[:600], nil)
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var flow QUICFlow
		flow.Reset(0)
		defer flow.Release()
		res := flow.Feed(a)
		if res.Status == NeedMore && len(b) > 0 {
			res = flow.Feed(b)
		}
		checkQUICResult(t, &flow, res)
	})
}

// FuzzQUICFrames seals fuzzed frames into one or two valid Initial packets
// (padded to 1200 bytes) and feeds them, which exercises the frame parser
// and the CRYPTO reassembly behind a working decryption.
func FuzzQUICFrames(f *testing.F) {
	hello := testClientHello("frames.example.test", 0)
	// A whole ClientHello in one CRYPTO frame (v1 and v2).
	f.Add(cryptoFrame(0, hello), []byte(nil), false)
	f.Add(cryptoFrame(0, hello), []byte(nil), true)
	// The hello in two packets, the second first.
	f.Add(cryptoFrame(40, hello[40:]), cryptoFrame(0, hello[:40]), false)
	// Every allowed frame type around CRYPTO frames that overlap.
	f.Add(datagram(
		[]byte{quicFramePing, quicFramePadding},
		[]byte{quicFrameAckECN, 0x05, 0x00, 0x01, 0x01, 0x00, 0x01, 0, 0, 0},
		cryptoFrame(10, hello[10:30]),
		cryptoFrame(0, hello[:20]),
		[]byte{quicFrameConnectionClose, 0x00, 0x00, 0x01, 'x'}), cryptoFrame(0, hello), false)
	// Conflicting overlap.
	f.Add(cryptoFrame(0, hello[:20]), cryptoFrame(10, bytes.Repeat([]byte{0xff}, 20)), false)
	// A frame type not allowed in an Initial, a cut-short ACK.
	f.Add([]byte{0x08, 0, 0}, []byte{quicFrameAck, 0x40}, false)
	f.Fuzz(func(t *testing.T, first, second []byte, v2 bool) {
		if len(first)+len(second) > 2400 {
			return // one packet each, in datagrams of at most 1280 bytes
		}
		v := &quicV1
		if v2 {
			v = &quicV2
		}
		var flow QUICFlow
		flow.Reset(0)
		defer flow.Release()
		res := flow.Feed(testPacket{version: v, frames: first, padTo: 1200}.seal(t))
		if res.Status == NeedMore && len(second) > 0 {
			res = flow.Feed(testPacket{version: v, pn: 1, frames: second, padTo: 1200}.seal(t))
		}
		checkQUICResult(t, &flow, res)
	})
}

// FuzzQUICCryptoStream checks the reassembler against a model: each 3-byte
// op adds ref[off:off+n] (ref is a fixed reference stream), possibly with
// one byte changed. The model is a byte map of what was received; the
// stream must agree with it on every error and on the prefix it returns.
func FuzzQUICCryptoStream(f *testing.F) {
	// In order; out of order; overlapping and repeated; a conflicting
	// overlap; past the limit; many small separate ranges.
	f.Add([]byte{0, 50, 0, 25, 50, 0, 50, 100, 0})
	f.Add([]byte{50, 50, 0, 0, 50, 0, 25, 50, 0})
	f.Add([]byte{0, 40, 0, 10, 40, 0, 0, 90, 0, 5, 5, 0})
	f.Add([]byte{0, 40, 0, 10, 40, 1})
	f.Add([]byte{0, 40, 0, 190, 40, 0})
	f.Add(bytes.Repeat([]byte{0, 1, 2, 3, 1, 2, 6, 1, 2, 9, 1, 2, 12, 1, 2, 15, 1, 2}, 3))
	const limit = 400
	var ref [2 * 256]byte
	for i := range ref {
		ref[i] = byte(i*7 + 3)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		var s quicCryptoStream
		s.reset(limit)
		defer s.release()
		var have [len(ref)]bool
		var got [len(ref)]byte
		for ; len(ops) >= 3; ops = ops[3:] {
			off, n, flags := 2*int(ops[0]), int(ops[1]), ops[2]
			if flags&2 != 0 {
				n &= 0x07 // short frames make many ranges
			}
			n = min(n, len(ref)-off)
			data := bytes.Clone(ref[off : off+n])
			if flags&1 != 0 && n > 0 {
				data[int(flags>>2)%n] ^= 0x5a
			}
			err := s.add(uint64(off), data)

			// The model's verdict, in the order the stream checks.
			var want error
			runsBefore, touches := quicRuns(have[:]), false
			for i := max(off-1, 0); i < min(off+n+1, len(ref)); i++ {
				touches = touches || have[i]
			}
			switch {
			case off+n > limit:
				want = ErrLimit
			case n == 0:
			default:
				for i, c := range data {
					if have[off+i] && got[off+i] != c {
						want = ErrMalformed
					}
				}
				if want == nil && !touches && runsBefore == maxSpans {
					want = ErrLimit
				}
			}
			if !errors.Is(err, want) || (want == nil) != (err == nil) {
				t.Fatalf("add(%d, %d bytes) = %v, model says %v", off, n, err, want)
			}
			if err != nil {
				return
			}
			for i, c := range data {
				have[off+i], got[off+i] = true, c
			}
			end := 0
			for end < len(have) && have[end] {
				end++
			}
			if p := s.prefix(); !bytes.Equal(p, got[:end]) {
				t.Fatalf("prefix = %x, model has %x", p, got[:end])
			}
		}
	})
}

// quicRuns counts the runs of true in have.
func quicRuns(have []bool) int {
	n := 0
	for i, h := range have {
		if h && (i == 0 || !have[i-1]) {
			n++
		}
	}
	return n
}

// TestQUICCryptoStream covers the reassembler's cases by name.
func TestQUICCryptoStream(t *testing.T) {
	ref := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	type op struct {
		off, end int
		change   bool
	}
	for _, c := range []struct {
		name   string
		ops    []op
		err    error
		prefix string
	}{
		{"in order", []op{{0, 10, false}, {10, 36, false}}, nil, string(ref)},
		{"reversed", []op{{10, 36, false}, {0, 10, false}}, nil, string(ref)},
		{"hole", []op{{0, 5, false}, {6, 10, false}}, nil, "01234"},
		{"hole filled by an overlap", []op{{0, 5, false}, {6, 10, false}, {3, 8, false}}, nil, "0123456789"},
		{"duplicate", []op{{0, 10, false}, {0, 10, false}}, nil, "0123456789"},
		{"contained", []op{{0, 20, false}, {5, 8, false}}, nil, "0123456789abcdefghij"},
		{"spanning two ranges", []op{{2, 4, false}, {6, 8, false}, {0, 12, false}}, nil, "0123456789ab"},
		{"adjacent ranges merge", []op{{4, 8, false}, {0, 4, false}}, nil, "01234567"},
		{"empty frame", []op{{0, 0, false}, {7, 7, false}}, nil, ""},
		{"conflicting overlap", []op{{0, 10, false}, {5, 15, true}}, ErrMalformed, ""},
		{"conflicting contained", []op{{0, 20, false}, {5, 6, true}}, ErrMalformed, ""},
		{"past the limit", []op{{30, 37, false}}, ErrLimit, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var s quicCryptoStream
			s.reset(36)
			defer s.release()
			var err error
			for _, o := range c.ops {
				data := make([]byte, o.end-o.off)
				if o.end <= len(ref) {
					copy(data, ref[o.off:o.end])
				}
				if o.change {
					data[0] ^= 1
				}
				if err = s.add(uint64(o.off), data); err != nil {
					break
				}
			}
			if !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			if err == nil && string(s.prefix()) != c.prefix {
				t.Errorf("prefix = %q, want %q", s.prefix(), c.prefix)
			}
		})
	}
}
