package classify

import (
	"crypto/aes"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
)

// This file builds QUIC client packets for the tests: the protecting side
// of what quic_packet.go removes. TestQUICBuilderMatchesRFC checks that it
// reproduces the RFCs' protected packets byte for byte, so the packets it
// builds are what a client would send.

// unhex decodes grouped hex (whitespace ignored).
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("bad hex in test data: %v", err)
	}
	return b
}

// appendVarint appends v in the shortest QUIC varint encoding (RFC 9000
// section 16).
func appendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<6:
		return append(b, byte(v))
	case v < 1<<14:
		return binary.BigEndian.AppendUint16(b, uint16(v)|0x4000)
	case v < 1<<30:
		return binary.BigEndian.AppendUint32(b, uint32(v)|0x80000000)
	}
	return binary.BigEndian.AppendUint64(b, v|0xc000000000000000)
}

// cryptoFrame is a CRYPTO frame carrying data at offset off.
func cryptoFrame(off uint64, data []byte) []byte {
	b := appendVarint([]byte{quicFrameCrypto}, off)
	b = appendVarint(b, uint64(len(data)))
	return append(b, data...)
}

// testPacket describes one long-header client packet.
type testPacket struct {
	version *quicVersion // the version on the wire (default v1)
	keys    *quicVersion // the salt and labels used to protect it (default version)
	typ     string       // "initial" (default), "0rtt", "handshake"
	dcid    []byte       // default rfcDCID
	scid    []byte
	token   []byte
	pn      uint64
	pnLen   int  // 1..4, default 4
	setRsv  byte // reserved bits (0x0c) set before protection
	frames  []byte
	// padTo pads the frames with PADDING so that the packet is this long.
	padTo int
}

// seal returns the protected packet. 0-RTT and Handshake packets get a
// payload of frames as is, unprotected: the reader must skip them without
// opening them.
func (p testPacket) seal(t testing.TB) []byte {
	t.Helper()
	v := p.version
	if v == nil {
		v = &quicV1
	}
	kv := p.keys
	if kv == nil {
		kv = v
	}
	dcid := p.dcid
	if dcid == nil {
		dcid = unhex(t, rfcDCID)
	}
	pnLen := p.pnLen
	if pnLen == 0 {
		pnLen = 4
	}
	typ := v.initial
	switch p.typ {
	case "0rtt":
		typ = v.zeroRTT
	case "handshake":
		typ = v.handshake
	}
	first := 0xc0 | typ<<4 | p.setRsv | byte(pnLen-1)
	hdr := []byte{first}
	hdr = binary.BigEndian.AppendUint32(hdr, v.number)
	hdr = append(hdr, byte(len(dcid)))
	hdr = append(hdr, dcid...)
	hdr = append(hdr, byte(len(p.scid)))
	hdr = append(hdr, p.scid...)
	if typ == v.initial {
		hdr = appendVarint(hdr, uint64(len(p.token)))
		hdr = append(hdr, p.token...)
	}
	frames := p.frames
	// The Length field is encoded in 2 bytes when under 16384, as the
	// RFC's vectors do, so the packet size is known before padding.
	const lengthLen = 2
	if p.padTo > 0 {
		if n := p.padTo - (len(hdr) + lengthLen + pnLen + len(frames) + quicTagLen); n > 0 {
			frames = append(frames[:len(frames):len(frames)], make([]byte, n)...)
		}
	}
	length := pnLen + len(frames)
	if typ == v.initial {
		length += quicTagLen
	}
	if length >= 1<<14 {
		t.Fatalf("test packet too long: %d", length)
	}
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(length)|0x4000)
	pnOffset := len(hdr)
	var pnb [8]byte
	binary.BigEndian.PutUint64(pnb[:], p.pn)
	hdr = append(hdr, pnb[8-pnLen:]...)
	if typ != v.initial {
		return append(hdr, frames...)
	}

	_, key, iv, hpKey := quicClientSecrets(kv, dcid)
	nonce := iv
	for k := range 8 {
		nonce[quicIVLen-8+k] ^= pnb[k]
	}
	pkt := newAESGCM(key[:]).Seal(hdr, nonce[:], frames, hdr)
	hp, err := aes.NewCipher(hpKey[:])
	if err != nil {
		t.Fatal(err)
	}
	var mask [16]byte
	hp.Encrypt(mask[:], pkt[pnOffset+4:pnOffset+4+quicSampleLen])
	pkt[0] ^= mask[0] & 0x0f
	for k := range pnLen {
		pkt[pnOffset+k] ^= mask[1+k]
	}
	return pkt
}

// datagram concatenates packets into one UDP payload.
func datagram(pkts ...[]byte) []byte {
	var d []byte
	for _, p := range pkts {
		d = append(d, p...)
	}
	return d
}

// initialDatagram is one padded Initial of 1200 bytes carrying frames.
func initialDatagram(t testing.TB, pn uint64, frames []byte) []byte {
	t.Helper()
	return testPacket{pn: pn, frames: frames, padTo: quicMinInitialDatagram}.seal(t)
}

// testClientHello returns a TLS 1.3 ClientHello handshake message (header
// included) naming sni, grown by a padding extension (RFC 7685) of pad
// bytes, so that the tests can make hellos of any size.
func testClientHello(sni string, pad int) []byte {
	return testClientHelloExt(sni, pad, nil)
}

// testClientHelloExt is testClientHello with more extensions (whole, type
// and length included) appended; an empty sni leaves out server_name.
func testClientHelloExt(sni string, pad int, more []byte) []byte {
	u16 := func(b []byte, v int) []byte { return binary.BigEndian.AppendUint16(b, uint16(v)) }
	var ext []byte
	if sni != "" {
		// server_name (RFC 6066 section 3)
		ext = u16(ext, 0)
		ext = u16(ext, len(sni)+5)
		ext = u16(ext, len(sni)+3)
		ext = append(ext, 0)
		ext = u16(ext, len(sni))
		ext = append(ext, sni...)
	}
	// supported_versions: TLS 1.3 (RFC 8446 section 4.2.1)
	ext = append(ext, 0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04)
	// supported_groups: x25519 (RFC 8446 section 4.2.7)
	ext = append(ext, 0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d)
	// signature_algorithms: ecdsa_secp256r1_sha256 (RFC 8446 section 4.2.3)
	ext = append(ext, 0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03)
	// key_share: x25519 with a 32-byte key (RFC 8446 section 4.2.8)
	ext = append(ext, 0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20)
	ext = append(ext, make([]byte, 32)...)
	ext = append(ext, more...)
	if pad > 0 {
		ext = u16(ext, 21)
		ext = u16(ext, pad)
		ext = append(ext, make([]byte, pad)...)
	}
	var body []byte
	body = append(body, 0x03, 0x03)             // legacy_version
	body = append(body, make([]byte, 32)...)    // random
	body = append(body, 0x00)                   // legacy_session_id
	body = append(body, 0x00, 0x02, 0x13, 0x01) // cipher_suites: TLS_AES_128_GCM_SHA256
	body = append(body, 0x01, 0x00)             // legacy_compression_methods
	body = u16(body, len(ext))
	body = append(body, ext...)
	msg := []byte{0x01, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	return append(msg, body...)
}
