package classify

import (
	"bytes"
	"crypto/aes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestQUICInitialSecrets checks the key derivation against the
// intermediate values of RFC 9001 appendix A.1 and RFC 9369 appendix A.1,
// which also checks the transcription of the vectors.
func TestQUICInitialSecrets(t *testing.T) {
	for _, v := range rfcVectors {
		t.Run(v.name, func(t *testing.T) {
			dcid := unhex(t, rfcDCID)
			secret, key, iv, hp := quicClientSecrets(v.version, dcid)
			got := map[string][]byte{"client_initial_secret": secret[:], "key": key[:], "iv": iv[:], "hp": hp[:]}
			want := map[string][]byte{
				"client_initial_secret": unhex(t, v.clientSecret),
				"key":                   unhex(t, v.key),
				"iv":                    unhex(t, v.iv),
				"hp":                    unhex(t, v.hp),
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Initial secrets (-want +got):\n%s", diff)
			}
		})
	}
}

// TestQUICHeaderProtectionVector checks the sample, mask and header of RFC
// 9001 appendix A.2 and RFC 9369 appendix A.2 against the packet.
func TestQUICHeaderProtectionVector(t *testing.T) {
	for _, v := range rfcVectors {
		t.Run(v.name, func(t *testing.T) {
			pkt := unhex(t, v.packet)
			hdr := unhex(t, v.header)
			prot := unhex(t, v.protectedHeader)
			if !bytes.HasPrefix(pkt, prot) {
				t.Fatalf("packet does not start with the protected header %x", prot)
			}
			sample := pkt[len(hdr) : len(hdr)+quicSampleLen] // 4-byte packet number: the sample follows the header
			if want := unhex(t, v.sample); !bytes.Equal(sample, want) {
				t.Fatalf("sample = %x, want %x", sample, want)
			}
			block, err := aes.NewCipher(unhex(t, v.hp))
			if err != nil {
				t.Fatal(err)
			}
			var mask [16]byte
			block.Encrypt(mask[:], sample)
			if want := unhex(t, v.mask); !bytes.Equal(mask[:5], want) {
				t.Fatalf("mask = %x, want %x", mask[:5], want)
			}
		})
	}
}

// TestQUICBuilderMatchesRFC seals the RFC's CRYPTO frame, padded to the
// appendix's 1162-byte payload, with packet number 2, and expects the
// RFC's protected packet: the test builder is then trustworthy for the
// other tests.
func TestQUICBuilderMatchesRFC(t *testing.T) {
	for _, v := range rfcVectors {
		t.Run(v.name, func(t *testing.T) {
			got := testPacket{version: v.version, pn: 2, frames: unhex(t, v.crypto), padTo: 1200}.seal(t)
			if want := unhex(t, v.packet); !bytes.Equal(got, want) {
				t.Fatalf("sealed packet differs from the RFC's:\n got %x\nwant %x", got, want)
			}
		})
	}
}

// TestQUICRFCClientInitial feeds the RFCs' protected client Initial to a
// flow: it must decrypt to the CRYPTO frame given there.
func TestQUICRFCClientInitial(t *testing.T) {
	for _, v := range rfcVectors {
		t.Run(v.name, func(t *testing.T) {
			var f QUICFlow
			f.Reset(0)
			defer f.Release()
			res := f.Feed(unhex(t, v.packet))
			want := Result{Status: Done, Name: "example.com", From: SourceQUIC}
			if diff := cmp.Diff(want, res); diff != "" {
				t.Fatalf("Feed (-want +got):\n%s", diff)
			}
			// The CRYPTO frame is type 06, offset 00, length 40f1 (241).
			frame := unhex(t, v.crypto)
			msg, err := f.clientHello()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(msg, frame[4:]) {
				t.Fatalf("reassembled CRYPTO stream:\n got %x\nwant %x", msg, frame[4:])
			}
			if f.version != v.version {
				t.Errorf("version = %#x, want %#x", f.version.number, v.version.number)
			}
			if f.largestPN != 2 {
				t.Errorf("largest packet number = %d, want 2", f.largestPN)
			}
		})
	}
}

// feedAll feeds datagrams to a fresh flow and returns every Result.
func feedAll(t testing.TB, limit int, datagrams ...[]byte) (*QUICFlow, []Result) {
	t.Helper()
	f := new(QUICFlow)
	f.Reset(limit)
	t.Cleanup(f.Release)
	var out []Result
	for _, d := range datagrams {
		out = append(out, f.Feed(d))
	}
	return f, out
}

// wantStatus checks the status of the final Result and, for Denied, that
// Err wraps want.
func wantStatus(t testing.TB, res Result, status Status, want error) {
	t.Helper()
	if res.Status != status {
		t.Fatalf("Result = %+v, want status %v", res, status)
	}
	if status == Denied && !errors.Is(res.Err, want) {
		t.Fatalf("Err = %v, want %v", res.Err, want)
	}
}

// TestQUICTwoDatagramHello splits a ClientHello too large for one packet
// across two Initial datagrams at every byte, and feeds them in both
// orders: the flow needs both, and then holds exactly the hello.
func TestQUICTwoDatagramHello(t *testing.T) {
	hello := testClientHello("two.example.test", 1400)
	if len(hello) < quicMinInitialDatagram {
		t.Fatalf("hello of %d bytes fits one datagram", len(hello))
	}
	for k := 1; k < len(hello); k++ {
		a := initialDatagram(t, 0, cryptoFrame(0, hello[:k]))
		b := initialDatagram(t, 1, cryptoFrame(uint64(k), hello[k:]))
		for _, order := range [][2][]byte{{a, b}, {b, a}} {
			f, res := feedAll(t, 0, order[0], order[1])
			if res[0].Status != NeedMore {
				t.Fatalf("split at %d: first datagram: %+v, want NeedMore", k, res[0])
			}
			wantStatus(t, res[1], Done, nil)
			if res[1].Name != "two.example.test" {
				t.Fatalf("split at %d: Name = %q", k, res[1].Name)
			}
			msg, _ := f.clientHello()
			if !bytes.Equal(msg, hello) {
				t.Fatalf("split at %d: reassembled %d bytes, not the hello", k, len(msg))
			}
		}
	}
}

// TestQUICPacketsAndFrames covers what a datagram may and may not carry.
func TestQUICPacketsAndFrames(t *testing.T) {
	hello := testClientHello("coalesced.example.test", 0)
	crypto := cryptoFrame(0, hello)
	half := len(hello) / 2
	otherDCID := []byte{1, 2, 3, 4, 5, 6, 7, 8}

	// Build the packets once per case; each case lists its datagrams.
	type tc struct {
		name      string
		datagrams func(t *testing.T) [][]byte
		status    Status
		err       error
	}
	one := func(pkts ...testPacket) func(t *testing.T) [][]byte {
		return func(t *testing.T) [][]byte {
			var d []byte
			for _, p := range pkts {
				d = append(d, p.seal(t)...)
			}
			return [][]byte{d}
		}
	}
	raw := func(ds ...[]byte) func(t *testing.T) [][]byte {
		return func(*testing.T) [][]byte { return ds }
	}
	cases := []tc{
		{"initial", one(testPacket{frames: crypto, padTo: 1200}), Done, nil},
		{"quic v2 initial", one(testPacket{version: &quicV2, frames: crypto, padTo: 1200}), Done, nil},
		{"initial then 0-RTT and Handshake", one(
			testPacket{frames: crypto},
			testPacket{typ: "0rtt", pn: 1, frames: bytes.Repeat([]byte{0xaa}, 200)},
			testPacket{typ: "handshake", frames: bytes.Repeat([]byte{0x55}, 1000)},
		), Done, nil},
		{"two coalesced initials", one(
			testPacket{frames: cryptoFrame(0, hello[:half])},
			testPacket{pn: 1, frames: cryptoFrame(uint64(half), hello[half:]), padTo: 1100},
		), Done, nil},
		{"coalesced initials out of order", one(
			testPacket{pn: 1, frames: cryptoFrame(uint64(half), hello[half:])},
			testPacket{frames: cryptoFrame(0, hello[:half]), padTo: 1100},
		), Done, nil},
		{"v2 initial then 0-RTT", one(
			testPacket{version: &quicV2, frames: crypto},
			testPacket{version: &quicV2, typ: "0rtt", pn: 1, frames: make([]byte, 1100)},
		), Done, nil},
		{"coalesced packet with another DCID is ignored", one(
			testPacket{frames: cryptoFrame(0, hello[:half]), padTo: 600},
			testPacket{dcid: otherDCID, frames: append(cryptoFrame(uint64(half), []byte("conflicting data")), []byte{0x08}...), padTo: 600},
		), NeedMore, nil},
		{"trailing zero bytes are ignored", func(t *testing.T) [][]byte {
			return [][]byte{append(testPacket{frames: crypto}.seal(t), make([]byte, 1200)...)}
		}, Done, nil},
		{"PING, PADDING, ACK, ACK_ECN and CONNECTION_CLOSE frames", one(testPacket{
			frames: datagram(
				[]byte{quicFramePing, quicFramePadding, quicFramePadding},
				[]byte{quicFrameAck, 0x05, 0x00, 0x01, 0x01, 0x00, 0x01}, // largest 5, delay 0, 1 range
				[]byte{quicFrameAckECN, 0x05, 0x00, 0x00, 0x02, 0x01, 0x02, 0x03},
				crypto,
				[]byte{quicFrameConnectionClose, 0x00, 0x00, 0x03, 'b', 'y', 'e'},
			), padTo: 1200}), Done, nil},
		{"Initial with a token", one(testPacket{token: []byte("a token from NEW_TOKEN"), frames: crypto, padTo: 1200}), Done, nil},
		{"1-byte packet number", one(testPacket{pnLen: 1, frames: crypto, padTo: 1200}), Done, nil},
		{"duplicate datagram", func(t *testing.T) [][]byte {
			d := initialDatagram(t, 0, cryptoFrame(0, hello[:half]))
			return [][]byte{d, d, initialDatagram(t, 1, cryptoFrame(uint64(half), hello[half:]))}
		}, Done, nil},

		{"empty datagram", raw([]byte{}), Denied, ErrNotTLS},
		{"short header first", raw(append([]byte{0x40}, make([]byte, 1250)...)), Denied, ErrNotTLS},
		{"version negotiation packet", raw(append([]byte{0x80, 0, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 1}, make([]byte, 1200)...)), Denied, ErrNotTLS},
		{"unknown version", raw(append([]byte{0xc0, 0xfa, 0xce, 0xb0, 0x0c, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0}, make([]byte, 1200)...)), Denied, ErrNotTLS},
		{"0-RTT first", one(testPacket{typ: "0rtt", frames: make([]byte, 1200)}), Denied, ErrNotTLS},
		{"Handshake first", one(testPacket{typ: "handshake", frames: make([]byte, 1200)}), Denied, ErrNotTLS},
		{"Retry first", raw(append([]byte{0xf0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0}, make([]byte, 1200)...)), Denied, ErrNotTLS},
		{"quic v2 with v1 salt and labels", one(testPacket{version: &quicV2, keys: &quicV1, frames: crypto, padTo: 1200}), Denied, ErrMalformed},
		{"quic v1 with v2 salt and labels", one(testPacket{keys: &quicV2, frames: crypto, padTo: 1200}), Denied, ErrMalformed},
		{"datagram under 1200 bytes", one(testPacket{frames: crypto, padTo: 1199}), Denied, ErrMalformed},
		{"DCID under 8 bytes", one(testPacket{dcid: []byte{1, 2, 3, 4, 5, 6, 7}, frames: crypto, padTo: 1200}), Denied, ErrMalformed},
		{"DCID over 20 bytes", one(testPacket{dcid: make([]byte, 21), frames: crypto, padTo: 1200}), Denied, ErrMalformed},
		{"SCID over 20 bytes", one(testPacket{scid: make([]byte, 21), frames: crypto, padTo: 1200}), Denied, ErrMalformed},
		{"reserved bits set", one(testPacket{setRsv: 0x08, frames: crypto, padTo: 1200}), Denied, ErrMalformed},
		{"no frames", func(t *testing.T) [][]byte {
			return [][]byte{datagram(testPacket{}.seal(t), testPacket{typ: "0rtt", frames: make([]byte, 1200)}.seal(t))}
		}, Denied, ErrMalformed},
		{"later datagram with another DCID", func(t *testing.T) [][]byte {
			return [][]byte{
				initialDatagram(t, 0, cryptoFrame(0, hello[:half])),
				testPacket{dcid: otherDCID, frames: cryptoFrame(uint64(half), hello[half:]), padTo: 1200}.seal(t),
			}
		}, Denied, ErrMalformed},
		{"later datagram in the other version", func(t *testing.T) [][]byte {
			return [][]byte{
				initialDatagram(t, 0, cryptoFrame(0, hello[:half])),
				testPacket{version: &quicV2, pn: 1, frames: cryptoFrame(uint64(half), hello[half:]), padTo: 1200}.seal(t),
			}
		}, Denied, ErrMalformed},
		{"later datagram with a short header", func(t *testing.T) [][]byte {
			return [][]byte{initialDatagram(t, 0, cryptoFrame(0, hello[:half])), append([]byte{0x40}, make([]byte, 100)...)}
		}, Denied, ErrNotTLS},
		{"later 0-RTT datagram is skipped", func(t *testing.T) [][]byte {
			return [][]byte{
				initialDatagram(t, 0, cryptoFrame(0, hello[:half])),
				testPacket{typ: "0rtt", pn: 1, frames: make([]byte, 300)}.seal(t),
				initialDatagram(t, 1, cryptoFrame(uint64(half), hello[half:])),
			}
		}, Done, nil},
		{"coalesced Retry", func(t *testing.T) [][]byte {
			retry := datagram([]byte{0xf0, 0, 0, 0, 1, 8}, unhex(t, rfcDCID), []byte{0})
			return [][]byte{append(testPacket{frames: cryptoFrame(0, hello[:half]), padTo: 1200}.seal(t), retry...)}
		}, Denied, ErrMalformed},
		{"coalesced packet cut short", func(t *testing.T) [][]byte {
			hs := testPacket{typ: "handshake", frames: make([]byte, 100)}.seal(t)
			return [][]byte{datagram(testPacket{frames: cryptoFrame(0, hello[:half]), padTo: 1200}.seal(t), hs[:len(hs)-1])}
		}, Denied, ErrMalformed},
		{"CRYPTO data that disagrees", func(t *testing.T) [][]byte {
			other := bytes.Clone(hello)
			other[half] ^= 1
			return [][]byte{
				initialDatagram(t, 0, cryptoFrame(0, hello[:half+1])),
				initialDatagram(t, 1, cryptoFrame(0, other)),
			}
		}, Denied, ErrMalformed},
		{"CRYPTO data that repeats", func(t *testing.T) [][]byte {
			return [][]byte{
				initialDatagram(t, 0, cryptoFrame(0, hello[:half+1])),
				initialDatagram(t, 1, datagram(cryptoFrame(0, hello[:half+5]), cryptoFrame(3, hello[3:]))),
			}
		}, Done, nil},
		{"bad ClientHello prefix refused at once", func(t *testing.T) [][]byte {
			bad := bytes.Clone(hello[:half])
			bad[4+2+32] = 33 // legacy_session_id longer than 32 bytes (RFC 8446 section 4.1.2)
			return [][]byte{initialDatagram(t, 0, cryptoFrame(0, bad))}
		}, Denied, ErrMalformed},
		{"CRYPTO stream not starting with a ClientHello", one(testPacket{frames: cryptoFrame(0, []byte{0x02, 0, 0, 1, 0}), padTo: 1200}), Denied, ErrMalformed},
		{"CRYPTO frame cut short", one(testPacket{frames: []byte{quicFrameCrypto, 0x00, 0x7f, 0xff, 1, 2, 3}, padTo: 1200}), Denied, ErrMalformed},
		{"CRYPTO frame past 2^62-1", one(testPacket{frames: datagram([]byte{quicFrameCrypto}, appendVarint(nil, 1<<62-1), []byte{0x01, 0xaa}), padTo: 1200}), Denied, ErrMalformed},
		{"ACK frame cut short", one(testPacket{frames: []byte{quicFrameAck, 0x05, 0x00, 0x7f, 0xff, 0x01, 0x00}, padTo: 1200}), Denied, ErrMalformed},
		{"CONNECTION_CLOSE frame cut short", one(testPacket{frames: []byte{quicFrameConnectionClose, 0x00, 0x00, 0x7f, 0xff, 'x'}, padTo: 1200}), Denied, ErrMalformed},
	}
	// Frame types that are not allowed in an Initial (RFC 9000 section 12.4).
	for _, typ := range []byte{0x04, 0x05, 0x07, 0x08, 0x0f, 0x10, 0x18, 0x1d, 0x1e, 0x30, 0x40} {
		cases = append(cases, tc{fmt.Sprintf("frame type 0x%02x", typ), one(testPacket{frames: append(bytes.Clone(crypto), typ, 0, 0, 0), padTo: 1200}), Denied, ErrMalformed})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, res := feedAll(t, 0, c.datagrams(t)...)
			last := res[len(res)-1]
			wantStatus(t, last, c.status, c.err)
			if c.status == Done && (last.Name != "coalesced.example.test" || last.From != SourceQUIC) {
				t.Fatalf("Name = %q from %v, want coalesced.example.test from quic", last.Name, last.From)
			}
		})
	}
}

// TestQUICBitFlips flips every bit of the RFC's client Initial in turn:
// no flipped packet may be read, whatever bit it was.
func TestQUICBitFlips(t *testing.T) {
	for _, v := range rfcVectors {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel() // 9600 key setups each
			pkt := unhex(t, v.packet)
			var f QUICFlow
			defer f.Release()
			for i := range pkt {
				for bit := range 8 {
					pkt[i] ^= 1 << bit
					f.Reset(0)
					res := f.Feed(pkt)
					pkt[i] ^= 1 << bit
					if res.Status != Denied || !(errors.Is(res.Err, ErrMalformed) || errors.Is(res.Err, ErrNotTLS)) {
						t.Fatalf("bit %d of byte %d flipped: %+v, want Denied (malformed or not-tls)", bit, i, res)
					}
				}
			}
		})
	}
	t.Run("tag", func(t *testing.T) {
		pkt := unhex(t, rfcVectors[0].packet)
		pkt[len(pkt)-1] ^= 0x80
		_, res := feedAll(t, 0, pkt)
		wantStatus(t, res[0], Denied, ErrMalformed)
	})
}

// TestQUICTruncated cuts the RFC's Initial, and a Initial + Handshake
// datagram, at every length: none is read.
func TestQUICTruncated(t *testing.T) {
	hello := testClientHello("cut.example.test", 0)
	// whole is a length at which the datagram is whole packets (the
	// Initial alone), where the cut datagram is read.
	for _, c := range []struct {
		name  string
		pkt   func(t *testing.T) []byte
		whole int
	}{
		{"RFC9001", func(t *testing.T) []byte { return unhex(t, rfcVectors[0].packet) }, -1},
		{"RFC9369", func(t *testing.T) []byte { return unhex(t, rfcVectors[1].packet) }, -1},
		{"initial and handshake", func(t *testing.T) []byte {
			return datagram(
				testPacket{frames: cryptoFrame(0, hello), padTo: 1300}.seal(t),
				testPacket{typ: "handshake", frames: make([]byte, 100)}.seal(t))
		}, 1300},
	} {
		t.Run(c.name, func(t *testing.T) {
			pkt := c.pkt(t)
			var f QUICFlow
			defer f.Release()
			for n := range len(pkt) {
				f.Reset(0)
				res := f.Feed(pkt[:n])
				if n == c.whole {
					wantStatus(t, res, Done, nil)
					continue
				}
				want := ErrMalformed
				if n == 0 {
					want = ErrNotTLS
				}
				if res.Status != Denied || !errors.Is(res.Err, want) {
					t.Fatalf("cut to %d of %d bytes: %+v, want Denied %v", n, len(pkt), res, want)
				}
			}
			f.Reset(0)
			wantStatus(t, f.Feed(pkt), Done, nil)
		})
	}
}

// TestQUICLimits checks the per-flow bounds.
func TestQUICLimits(t *testing.T) {
	hello := testClientHello("limit.example.test", 600)
	t.Run("hello over the limit", func(t *testing.T) {
		_, res := feedAll(t, len(hello)-1, initialDatagram(t, 0, cryptoFrame(0, hello[:10])))
		wantStatus(t, res[0], Denied, ErrLimit)
	})
	t.Run("hello at the limit", func(t *testing.T) {
		_, res := feedAll(t, len(hello), initialDatagram(t, 0, cryptoFrame(0, hello)))
		wantStatus(t, res[0], Done, nil)
	})
	t.Run("CRYPTO data past the limit", func(t *testing.T) {
		_, res := feedAll(t, 1000, initialDatagram(t, 0, cryptoFrame(1000, []byte{1})))
		wantStatus(t, res[0], Denied, ErrLimit)
	})
	t.Run("too many holes", func(t *testing.T) {
		var frames []byte
		for i := range maxSpans + 1 {
			frames = append(frames, cryptoFrame(uint64(10+2*i), []byte{0xee})...)
		}
		_, res := feedAll(t, 0, initialDatagram(t, 0, frames))
		wantStatus(t, res[0], Denied, ErrLimit)
	})
	t.Run("holes just under the bound", func(t *testing.T) {
		var frames []byte
		for i := range maxSpans {
			frames = append(frames, cryptoFrame(uint64(10+2*i), hello[10+2*i:11+2*i])...)
		}
		_, res := feedAll(t, 0, initialDatagram(t, 0, frames), initialDatagram(t, 1, cryptoFrame(0, hello)))
		wantStatus(t, res[1], Done, nil)
	})
	t.Run("too many datagrams", func(t *testing.T) {
		d := initialDatagram(t, 0, []byte{quicFramePing})
		var ds [][]byte
		for range quicMaxDatagrams(QUICDefaultMaxBytes) + 1 {
			ds = append(ds, d)
		}
		_, res := feedAll(t, 0, ds...)
		wantStatus(t, res[len(res)-2], NeedMore, nil)
		wantStatus(t, res[len(res)-1], Denied, ErrLimit)
	})
}

// TestQUICDecidedAndReuse checks that a decided flow keeps its Result and
// that Reset and Release make the flow reusable.
func TestQUICDecidedAndReuse(t *testing.T) {
	pkt := unhex(t, rfcVectors[0].packet)
	var f QUICFlow // the zero value is ready
	first := f.Feed(pkt)
	wantStatus(t, first, Done, nil)
	again := f.Feed([]byte("anything at all"))
	if diff := cmp.Diff(first, again); diff != "" {
		t.Errorf("a decided flow's Result changed (-want +got):\n%s", diff)
	}
	f.Release()
	if diff := cmp.Diff(first, f.Feed(nil)); diff != "" {
		t.Errorf("Release changed a decided Result (-want +got):\n%s", diff)
	}
	f.Reset(0)
	wantStatus(t, f.Feed([]byte{0x40}), Denied, ErrNotTLS)
	// Released while undecided: the flow starts over.
	hello := testClientHello("again.example.test", 1400)
	f.Reset(0)
	wantStatus(t, f.Feed(initialDatagram(t, 0, cryptoFrame(0, hello[:700]))), NeedMore, nil)
	f.Release()
	wantStatus(t, f.Feed(initialDatagram(t, 1, cryptoFrame(700, hello[700:]))), NeedMore, nil)
	wantStatus(t, f.Feed(initialDatagram(t, 0, cryptoFrame(0, hello[:700]))), Done, nil)
	f.Reset(0)
	wantStatus(t, f.Feed(unhex(t, rfcVectors[1].packet)), Done, nil)
	f.Release()
}

// TestQUICPacketNumberDecode checks the decoding of RFC 9000 section 17.1
// and appendix A.3.
func TestQUICPacketNumberDecode(t *testing.T) {
	for _, c := range []struct {
		name      string
		largest   int64
		truncated uint64
		pnLen     int
		want      uint64
	}{
		{"RFC 9000 A.3 example", 0xa82f30ea, 0x9b32, 2, 0xa82f9b32},
		{"first packet", -1, 0, 1, 0},
		{"first packet 2 (RFC 9001 A.2)", -1, 2, 4, 2},
		{"next", 5, 6, 1, 6},
		{"older", 300, 0x2c, 1, 300},
		{"wrap forward", 0xff, 0x01, 1, 0x101},
		{"behind the window", 0x17f, 0x00, 1, 0x200},
		{"no wrap below zero", 10, 0xf0, 1, 0xf0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := decodeQUICPacketNumber(c.largest, c.truncated, c.pnLen); got != c.want {
				t.Errorf("decode(%#x, %#x, %d) = %#x, want %#x", c.largest, c.truncated, c.pnLen, got, c.want)
			}
		})
	}
}

// TestQUICLaterPacketNumbers sends a two-datagram hello whose second
// packet number is encoded in 1 byte relative to the first.
func TestQUICLaterPacketNumbers(t *testing.T) {
	hello := testClientHello("pn.example.test", 1400)
	a := testPacket{pn: 254, pnLen: 2, frames: cryptoFrame(0, hello[:700]), padTo: 1200}.seal(t)
	b := testPacket{pn: 256, pnLen: 1, frames: cryptoFrame(700, hello[700:]), padTo: 1200}.seal(t)
	f, res := feedAll(t, 0, a, b)
	wantStatus(t, res[1], Done, nil)
	if f.largestPN != 256 {
		t.Errorf("largest packet number = %d, want 256", f.largestPN)
	}
}

// TestQUICHelloResult checks what the ClientHello parser makes of the
// reassembled hello: the normalised name, no name, ECH, and refusals.
func TestQUICHelloResult(t *testing.T) {
	// encrypted_client_hello (0xfe0d) with an arbitrary body: the reader
	// only notes that it is there.
	ech := []byte{0xfe, 0x0d, 0x00, 0x04, 0x00, 0x01, 0x02, 0x03}
	longHello := testClientHello("big.example.test", 0)
	longHello = append(longHello, 0x00) // one byte after the message...
	longHello[3]++                      // ...counted in its length
	for _, c := range []struct {
		name  string
		hello []byte
		want  Result
	}{
		{"name normalised", testClientHello("WWW.Example.TEST.", 0), Result{Status: Done, Name: "www.example.test", From: SourceQUIC}},
		{"no server_name", testClientHello("", 0), Result{Status: Done}},
		{"ECH", testClientHelloExt("public.example.test", 0, ech), Result{Status: Done, Name: "public.example.test", From: SourceQUIC, ECH: true}},
		{"IP literal", testClientHello("192.0.2.1", 0), Result{Status: Denied, Err: ErrMalformed}},
		{"bytes after the extensions", longHello, Result{Status: Denied, Err: ErrMalformed}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, res := feedAll(t, 0, initialDatagram(t, 0, cryptoFrame(0, c.hello)))
			got := res[0]
			if c.want.Err != nil {
				wantStatus(t, got, Denied, c.want.Err)
				return
			}
			if diff := cmp.Diff(c.want, got, cmp.Comparer(func(a, b error) bool { return a == b })); diff != "" {
				t.Fatalf("Result (-want +got):\n%s", diff)
			}
		})
	}
}

// TestQUICCapacity checks what the engine accounts for a QUIC flow: the
// CRYPTO stream buffer in the class of the bytes received, no packet
// scratch buffer between datagrams, nothing after Reset or Release; and a
// hello over several datagrams, last first with overlapping frames, that
// grows the stream buffer across classes.
func TestQUICCapacity(t *testing.T) {
	ds := readQUICRecording(t, filepath.Join("testdata", "quic", "quic-chromium.pcap"))
	check := func(t *testing.T, f *QUICFlow, what string) {
		t.Helper()
		if f.pkt.capacity() != 0 {
			t.Errorf("%s: a packet buffer of %d bytes held between datagrams", what, f.pkt.capacity())
		}
		if !capacityFits(f.Capacity(), f.BufferedBytes(), QUICDefaultMaxBytes) || f.Capacity() == 0 && f.BufferedBytes() != 0 {
			t.Errorf("%s: Capacity %d for %d bytes", what, f.Capacity(), f.BufferedBytes())
		}
	}
	var f QUICFlow
	f.Reset(0)
	if f.Capacity() != 0 || f.BufferedBytes() != 0 {
		t.Fatalf("fresh flow: Capacity %d, BufferedBytes %d", f.Capacity(), f.BufferedBytes())
	}
	wantStatus(t, f.Feed(ds[0]), NeedMore, nil)
	check(t, &f, "first datagram")
	first := f.BufferedBytes()
	if first == 0 {
		t.Fatal("no CRYPTO bytes held after the first datagram")
	}
	wantStatus(t, f.Feed(ds[1]), Done, nil)
	check(t, &f, "decided")
	if f.BufferedBytes() <= first {
		t.Errorf("BufferedBytes %d after the second datagram, %d after the first", f.BufferedBytes(), first)
	}
	f.Release()
	if f.Capacity() != 0 || f.BufferedBytes() != 0 {
		t.Errorf("after Release: Capacity %d, BufferedBytes %d", f.Capacity(), f.BufferedBytes())
	}
	f.Reset(0)
	wantStatus(t, f.Feed(ds[0]), NeedMore, nil)
	f.Reset(0)
	if f.Capacity() != 0 || f.BufferedBytes() != 0 {
		t.Errorf("after Reset: Capacity %d, BufferedBytes %d", f.Capacity(), f.BufferedBytes())
	}

	hello := testClientHello("grow.example.test", 4000)
	var big [][]byte
	for off := 0; off < len(hello); off += 900 {
		// Each datagram repeats the last 100 bytes of the one before.
		start := max(0, off-100)
		big = append(big, initialDatagram(t, uint64(len(big)), cryptoFrame(uint64(start), hello[start:min(off+900, len(hello))])))
	}
	f.Reset(0)
	defer f.Release()
	var res Result
	for i := len(big) - 1; i >= 0; i-- {
		res = f.Feed(big[i])
		check(t, &f, fmt.Sprintf("datagram %d", i))
	}
	if want := (Result{Status: Done, Name: "grow.example.test", From: SourceQUIC}); res != want {
		t.Fatalf("Result %+v, want %+v", res, want)
	}
	if f.BufferedBytes() != len(hello) {
		t.Errorf("BufferedBytes %d, want %d", f.BufferedBytes(), len(hello))
	}
}
