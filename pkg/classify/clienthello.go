package classify

import (
	"fmt"
	"iter"

	"golang.org/x/crypto/cryptobyte"
)

// TLS constants (RFC 8446 §4, §4.2; RFC 6066 §3; RFC 7301 §3.1; the ECH
// extension's code point from the TLS ECH specification, draft-ietf-tls-esni).
const (
	typeClientHello = 1 // HandshakeType client_hello

	extServerName = 0      // server_name
	extALPN       = 16     // application_layer_protocol_negotiation
	extECH        = 0xfe0d // encrypted_client_hello

	nameTypeHostName = 0 // NameType host_name

	// maxExtensions bounds the extensions one hello may carry, so the
	// duplicate check stays a small fixed array. Real clients send 10 to 25
	// (GREASE included); a hello past the bound is refused as ErrLimit.
	maxExtensions = 128
)

// ClientHello is what ParseClientHello read. Every field is valid iff
// ParseClientHello returned a nil error; on an error it is the zero value.
type ClientHello struct {
	// Len is the length of the handshake message, its 4-octet header
	// included.
	Len int
	// Version is the hello's legacy_version, 0x0301 to 0x0303.
	Version uint16
	// SNI is set when the hello carried a server_name extension, which then
	// held exactly one host_name: ServerName returns it. A hello without
	// server_name is valid and names nothing.
	SNI bool
	// ECH is set when the hello carried an encrypted_client_hello
	// extension. ServerName is then the outer, public name; the name the
	// client wants is encrypted. Clients that support ECH send a GREASE
	// extension when they have no ECH config, so this is set for them too.
	ECH bool

	name    [MaxNameLen]byte
	nameLen uint8
	// alpn is the ProtocolNameList as sent (without its length), checked to
	// hold one or more non-empty names; nil without the ALPN extension. It
	// aliases the message passed to ParseClientHello.
	alpn []byte
}

// ServerName returns the normalised host_name (lowercase, no trailing dot),
// or nil when SNI is false. It points into h.
func (h *ClientHello) ServerName() []byte { return h.name[:h.nameLen] }

// ALPN yields the protocol names of the ALPN extension, in the order sent.
// The slices alias the message passed to ParseClientHello and are valid
// while it is unchanged.
func (h *ClientHello) ALPN() iter.Seq[[]byte] {
	list := h.alpn
	return func(yield func([]byte) bool) {
		s := cryptobyte.String(list)
		var p cryptobyte.String
		for s.ReadUint8LengthPrefixed(&p) {
			if !yield(p) {
				return
			}
		}
	}
}

// ParseClientHello reads one TLS handshake message that must be a
// ClientHello (RFC 8446 §4.1.2, which also covers TLS 1.0 to 1.2 hellos).
// msg starts at the handshake header (msg_type, uint24 length) and holds
// that one message, without a record layer: TLS over TCP strips records
// first, QUIC passes its reassembled CRYPTO stream.
//
// msg must be exactly the message: bytes after it are refused as
// ErrMalformed (a client sends nothing after its ClientHello before the
// server answers). A caller holding a longer stream slices it at
// 4 + the uint24 length first.
//
// Errors: ErrTruncated when msg is a valid prefix of a ClientHello (checked
// as far as it goes, so a bad prefix is refused without waiting);
// ErrMalformed (wrapped, saying where) when it cannot be a valid hello;
// ErrLimit when it carries more than 128 extensions. ParseClientHello does
// not allocate unless it returns an error other than ErrTruncated.
func ParseClientHello(msg []byte) (ClientHello, error) {
	var h ClientHello
	if err := h.parse(msg); err != nil {
		return ClientHello{}, err
	}
	return h, nil
}

func (h *ClientHello) parse(msg []byte) error {
	// The message header: the body's length is unknown until it is read, so
	// the header reads may run out only as truncation.
	top := cursor{s: msg, missing: 4}
	var typ uint8
	if err := top.u8(&typ, "handshake type"); err != nil {
		return err
	}
	if typ != typeClientHello {
		return fmt.Errorf("%w: handshake type %d, want client_hello (1)", ErrMalformed, typ)
	}
	if err := top.need(3, "handshake length"); err != nil {
		return err
	}
	var n uint32
	top.s.ReadUint24(&n)
	body := cursor{s: top.s}
	if int(n) < len(top.s) {
		return fmt.Errorf("%w: %d bytes after the %d-byte ClientHello", ErrMalformed, len(top.s)-int(n), n)
	}
	body.missing = int(n) - len(top.s)
	h.Len = 4 + int(n)

	// RFC 8446 §4.1.2: legacy_version is 0x0303 for TLS 1.3 and 1.2 hellos;
	// TLS 1.0 and 1.1 clients send 0x0301, 0x0302. SSL 3.0 (0x0300, RFC
	// 7568 forbids it) and anything else is not a hello a server answers.
	if err := body.u16(&h.Version, "legacy_version"); err != nil {
		return err
	}
	if h.Version < 0x0301 || h.Version > 0x0303 {
		return fmt.Errorf("%w: ClientHello legacy_version 0x%04x", ErrMalformed, h.Version)
	}
	if err := body.skip(32, "random"); err != nil {
		return err
	}
	var field cursor
	// legacy_session_id<0..32>
	if l, err := body.prefixed(1, &field, "legacy_session_id"); err != nil {
		return err
	} else if l > 32 {
		return fmt.Errorf("%w: legacy_session_id of %d bytes, more than 32", ErrMalformed, l)
	} else if err := field.whole(); err != nil {
		return err
	}
	// cipher_suites<2..2^16-2>: whole uint16s, at least one.
	if l, err := body.prefixed(2, &field, "cipher_suites"); err != nil {
		return err
	} else if l < 2 || l%2 != 0 {
		return fmt.Errorf("%w: cipher_suites of %d bytes", ErrMalformed, l)
	} else if err := field.whole(); err != nil {
		return err
	}
	// legacy_compression_methods<1..2^8-1>
	if l, err := body.prefixed(1, &field, "legacy_compression_methods"); err != nil {
		return err
	} else if l < 1 {
		return fmt.Errorf("%w: no legacy_compression_methods", ErrMalformed)
	} else if err := field.whole(); err != nil {
		return err
	}
	// A TLS 1.0-1.2 hello may end here (RFC 5246 §7.4.1.2): no extensions,
	// so no name.
	if more, err := body.more(); err != nil || !more {
		return err
	}
	var exts cursor
	if _, err := body.prefixed(2, &exts, "extensions"); err != nil {
		return err
	}
	if err := body.done("ClientHello"); err != nil {
		return err
	}
	return h.parseExtensions(&exts)
}

func (h *ClientHello) parseExtensions(exts *cursor) error {
	// RFC 8446 §4.2: "There MUST NOT be more than one extension of the same
	// type in a given extension block." A server that takes the first of two
	// server_names and a filter that takes the last would disagree; refuse
	// every duplicate, as crypto/tls does.
	var seen [maxExtensions]uint16
	count := 0
	for {
		more, err := exts.more()
		if err != nil || !more {
			return err
		}
		var typ uint16
		if err := exts.u16(&typ, "extension type"); err != nil {
			return err
		}
		for _, t := range seen[:count] {
			if t == typ {
				return fmt.Errorf("%w: extension %d appears twice", ErrMalformed, typ)
			}
		}
		if count == len(seen) {
			return fmt.Errorf("%w: more than %d extensions", ErrLimit, maxExtensions)
		}
		seen[count] = typ
		count++
		var data cursor
		if _, err := exts.prefixed(2, &data, "extension data"); err != nil {
			return err
		}
		switch typ {
		case extServerName:
			err = h.parseServerName(&data)
		case extALPN:
			err = h.parseALPN(&data)
		case extECH:
			// Presence is all that counts: the payload is encrypted for the
			// server (or GREASE) and says nothing a filter can check.
			h.ECH = true
			err = data.whole()
		default:
			err = data.whole()
		}
		if err != nil {
			return err
		}
	}
}

// parseServerName reads the server_name extension of RFC 6066 §3:
//
//	struct { NameType name_type; select (name_type) { case host_name: HostName; } name; } ServerName;
//	struct { ServerName server_name_list<1..2^16-1> } ServerNameList;
//	opaque HostName<1..2^16-1>;
//
// RFC 6066 allows one name per name_type and defines only host_name; since a
// ServerName of another type has no length a reader could skip, any other
// type, a second entry, an empty list or an empty name is refused.
func (h *ClientHello) parseServerName(data *cursor) error {
	var list cursor
	if _, err := data.prefixed(2, &list, "server_name_list"); err != nil {
		return err
	}
	if err := data.done("server_name extension"); err != nil {
		return err
	}
	var nameType uint8
	if err := list.u8(&nameType, "server_name name_type"); err != nil {
		return err
	}
	if nameType != nameTypeHostName {
		return fmt.Errorf("%w: server_name name_type %d, want host_name (0)", ErrMalformed, nameType)
	}
	var host cursor
	n, err := list.prefixed(2, &host, "host_name")
	if err != nil {
		return err
	}
	if err := list.done("server_name_list (exactly one host_name)"); err != nil {
		return err
	}
	raw, err := host.bytes(n, "host_name")
	if err != nil {
		return err
	}
	name, err := AppendName(h.name[:0], raw)
	if err != nil {
		return fmt.Errorf("server_name: %w", err)
	}
	h.nameLen = uint8(len(name))
	h.SNI = true
	return nil
}

// parseALPN reads the extension of RFC 7301 §3.1:
//
//	opaque ProtocolName<1..2^8-1>;
//	struct { ProtocolName protocol_name_list<2..2^16-1> } ProtocolNameList;
func (h *ClientHello) parseALPN(data *cursor) error {
	var list cursor
	n, err := data.prefixed(2, &list, "protocol_name_list")
	if err != nil {
		return err
	}
	if err := data.done("ALPN extension"); err != nil {
		return err
	}
	if n < 2 {
		return fmt.Errorf("%w: ALPN protocol_name_list of %d bytes", ErrMalformed, n)
	}
	all := list.s
	for {
		more, err := list.more()
		if err != nil {
			return err
		}
		if !more {
			break
		}
		var p cursor
		if l, err := list.prefixed(1, &p, "ALPN ProtocolName"); err != nil {
			return err
		} else if l == 0 {
			return fmt.Errorf("%w: empty ALPN ProtocolName", ErrMalformed)
		} else if err := p.whole(); err != nil {
			return err
		}
	}
	h.alpn = all
	return nil
}
