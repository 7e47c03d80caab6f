package classify

import (
	"golang.org/x/crypto/cryptobyte"
)

// This file builds TLS ClientHellos and records for tests, independently of
// the parser: cryptobyte.Builder writes the structures of RFC 8446 §4.1.2.

// tlsExt is one extension as it goes on the wire.
type tlsExt struct {
	typ  uint16
	data []byte
}

// helloSpec describes a ClientHello to build. The zero value builds a valid
// TLS 1.2-format hello with one cipher suite and no extensions block.
type helloSpec struct {
	version   uint16 // legacy_version; 0 means 0x0303
	sessionID []byte
	suites    []uint16 // nil means {0x1301}
	noExts    bool     // leave the extensions block out entirely
	exts      []tlsExt
}

func (s helloSpec) body() []byte {
	var b cryptobyte.Builder
	v := s.version
	if v == 0 {
		v = 0x0303
	}
	b.AddUint16(v)
	b.AddBytes(make([]byte, 32)) // random
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(s.sessionID) })
	suites := s.suites
	if suites == nil {
		suites = []uint16{0x1301}
	}
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, cs := range suites {
			b.AddUint16(cs)
		}
	})
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
	if !s.noExts {
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, e := range s.exts {
				b.AddUint16(e.typ)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e.data) })
			}
		})
	}
	return b.BytesOrPanic()
}

// msg returns the handshake message: type client_hello, uint24 length, body.
func (s helloSpec) msg() []byte { return handshakeMsg(typeClientHello, s.body()) }

func handshakeMsg(typ uint8, body []byte) []byte {
	var b cryptobyte.Builder
	b.AddUint8(typ)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(body) })
	return b.BytesOrPanic()
}

// sniExt builds a server_name extension with one host_name entry per name.
func sniExt(names ...string) tlsExt {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, n := range names {
			b.AddUint8(nameTypeHostName)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(n)) })
		}
	})
	return tlsExt{extServerName, b.BytesOrPanic()}
}

// alpnExt builds an ALPN extension listing protos.
func alpnExt(protos ...string) tlsExt {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, p := range protos {
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
		}
	})
	return tlsExt{extALPN, b.BytesOrPanic()}
}

// echExt is an encrypted_client_hello extension of the outer type with a
// made-up payload (config id, enc, payload are opaque to the parser).
func echExt() tlsExt {
	return tlsExt{extECH, []byte{0, 0, 1, 0, 1, 7, 0, 2, 0xaa, 0xbb, 0, 3, 1, 2, 3}}
}

// records cuts msg into TLS handshake records whose fragments have the
// given sizes (the last fragment takes the rest), with record version
// 0x0301.
func records(msg []byte, sizes ...int) []byte {
	var out []byte
	for i := 0; len(msg) > 0; i++ {
		n := len(msg)
		if i < len(sizes) && sizes[i] < n {
			n = sizes[i]
		}
		out = append(out, recordHeader(22, 0x0301, n)...)
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

func recordHeader(typ uint8, version uint16, n int) []byte {
	return []byte{typ, byte(version >> 8), byte(version), byte(n >> 8), byte(n)}
}
