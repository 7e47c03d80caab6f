// Package hostname is the one check and normal form of host names in
// egressd: the names classify reads off the wire (TLS and QUIC SNI, HTTP
// Host), the names a policy is written with (after their IDNA conversion,
// which is policy's), and the names resolve asks DNS about. A name one of
// them accepts, the others accept in the same form, so a name can match a
// policy exactly when a client can send it.
//
// The normal form is the name in ASCII, letters lowercased, without the
// trailing dot (RFC 6066 §3 sends SNI so; DNS compares names without
// regard to case, RFC 4343). A name is refused when:
//
//   - it is empty, or "." alone;
//   - a label is empty (a leading dot, "..", two trailing dots), longer
//     than 63 octets, or the name longer than 253 octets without its
//     trailing dot (RFC 1035 §2.3.4: 255 octets on the wire);
//   - a byte is not a letter, a digit, '-', '_' or '.': internationalised
//     names travel as A-labels (RFC 5890 §2.3.2.1, RFC 6066 §3), and any
//     other byte (>= 0x80, NUL, space, '*', ':', '%', '\\') is read
//     differently by resolvers, servers and URL parsers. The underscore is
//     taken because service names carry it (RFC 8552);
//   - its last label reads as a number (all digits, or "0x" and hex
//     digits): inet_aton and URL parsers (WHATWG "ends in a number") read
//     such a name as an IPv4 address, and no top-level domain has that form
//     (RFC 3696 §2, RFC 1123 §2.1), so it is an address, not a name.
//
// Hyphens are not checked: a label may start or end with one, as LDH
// (RFC 952, RFC 1123 §2.1) forbids. Names that break it are served on the
// Internet and clients send them; matching compares the bytes as they are,
// so taking them opens nothing. Nor are A-labels decoded here: an "xn--"
// label that is not valid punycode is still a DNS label; policy, which
// converts names people type, validates them (RFC 5891 §5).
//
// Check, Append and Normalize do not allocate unless they refuse a name
// with an *Error.
package hostname
