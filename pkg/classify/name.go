package classify

import (
	"errors"
	"fmt"
)

// MaxNameLen is the longest name AppendName accepts, without the trailing
// dot: 253 octets, the longest DNS name in text form (RFC 1035 §2.3.4, 255
// octets on the wire less the length octets).
const MaxNameLen = 253

// maxLabelLen is the longest label (RFC 1035 §2.3.4).
const maxLabelLen = 63

// errIPLiteral marks a name that AppendName refused because it is an IP
// address. SNI callers report it as malformed (RFC 6066 §3 forbids literal
// addresses in HostName); the HTTP reader uses it to say "no name" instead,
// since an address in Host is legal HTTP (RFC 9110 §7.2).
var errIPLiteral = fmt.Errorf("%w: IP literal where a name belongs", ErrMalformed)

// AppendName checks raw as a DNS name read off the wire (a TLS server_name
// host_name, from TCP or QUIC, or an HTTP host) and appends its normal form
// to dst: ASCII letters lowercased and one trailing dot removed. It refuses,
// with an error wrapping ErrMalformed:
//
//   - any byte outside letters, digits, '-', '_' and '.': RFC 6066 §3 sends
//     names as ASCII, internationalised names as A-labels (punycode), so a
//     byte >= 0x80, NUL, space or any other punctuation is never a name a
//     resolver or a policy would read the same way. The underscore is taken
//     because real service names carry it (DNS allows any octet; LDH is the
//     host-name rule of RFC 952/1123, which some services break);
//   - an empty name, an empty label (leading dot, "..", a lone "."), a label
//     over 63 octets or a name over 253 octets (RFC 1035 §2.3.4);
//   - an IP literal (RFC 6066 §3 forbids them in HostName): a name whose last
//     label is all digits, or "0x" and hex digits, is read as an address by
//     inet_aton and by URL parsers (WHATWG "ends in a number"), and no
//     top-level domain has that form (RFC 3696 §2), so it is refused here
//     before anything could resolve or match it as a name. IPv6 literals are
//     refused by the byte rule (':', '[').
//
// Hyphen placement (LDH's "no leading or trailing hyphen") is not enforced:
// names that break it exist on the Internet and servers accept them; the
// policy matches the bytes as they are, so taking them opens nothing.
//
// AppendName does not allocate when dst has room for the name (cap(dst) -
// len(dst) >= MaxNameLen is always enough). On error dst is returned
// unchanged.
func AppendName(dst, raw []byte) ([]byte, error) {
	n := len(raw)
	if n > 0 && raw[n-1] == '.' {
		n-- // RFC 6066 §3 says "without a trailing dot"; policy names have none either
	}
	name := raw[:n]
	if n == 0 {
		return dst, fmt.Errorf("%w: empty name %q", ErrMalformed, raw)
	}
	if n > MaxNameLen {
		return dst, fmt.Errorf("%w: name of %d octets, longer than %d", ErrMalformed, n, MaxNameLen)
	}
	start := len(dst)
	label := 0     // length of the current label
	lastStart := 0 // index in name where the last label starts
	for i := range n {
		c := name[i]
		switch {
		case c == '.':
			if label == 0 {
				return dst[:start], fmt.Errorf("%w: empty label in %q", ErrMalformed, raw)
			}
			label = 0
			lastStart = i + 1
			dst = append(dst, c)
			continue
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return dst[:start], fmt.Errorf("%w: byte 0x%02x at %d in name %q", ErrMalformed, c, i, raw)
		}
		label++
		if label > maxLabelLen {
			return dst[:start], fmt.Errorf("%w: label longer than %d octets in %q", ErrMalformed, maxLabelLen, raw)
		}
		dst = append(dst, c)
	}
	if label == 0 { // "a.." less one trailing dot ends in an empty label
		return dst[:start], fmt.Errorf("%w: empty label in %q", ErrMalformed, raw)
	}
	if numericLabel(dst[start+lastStart:]) {
		return dst[:start], errIPLiteral
	}
	return dst, nil
}

// numericLabel reports whether a (lowercase) label reads as a number to an
// address parser: all decimal digits, or "0x" followed by hex digits (octal
// is all digits too).
func numericLabel(l []byte) bool {
	if len(l) >= 2 && l[0] == '0' && l[1] == 'x' {
		for _, c := range l[2:] {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
		return true
	}
	for _, c := range l {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// isIPLiteral reports whether err is AppendName's refusal of an IP literal.
func isIPLiteral(err error) bool { return errors.Is(err, errIPLiteral) }
