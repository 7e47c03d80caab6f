package classify

import (
	"fmt"

	"github.com/egressd/egressd/internal/hostname"
)

// MaxNameLen is the longest name AppendName accepts, without the trailing
// dot: 253 octets (RFC 1035 §2.3.4).
const MaxNameLen = hostname.MaxLen

// AppendName checks raw as a DNS name read off the wire (a TLS server_name
// host_name, from TCP or QUIC, or an HTTP host) and appends its normal form
// to dst: ASCII letters lowercased and one trailing dot removed. The check
// is egressd's one check of host names (internal/hostname), the same the
// policy and the resolver make, so a name read here can match a policy
// name exactly when it is the same name. Refused, with an error wrapping
// ErrMalformed and the hostname.Problem:
//
//   - any byte outside letters, digits, '-', '_' and '.': RFC 6066 §3 sends
//     host_name as ASCII, internationalised names as A-labels, so a byte
//     >= 0x80, NUL, space or any other punctuation is never a name a
//     resolver or a policy would read the same way;
//   - an empty name, an empty label, a label over 63 octets or a name over
//     253 octets (RFC 1035 §2.3.4);
//   - an IP literal (RFC 6066 §3 forbids them in HostName): a name whose last
//     label is all digits, or "0x" and hex digits, is read as an address by
//     inet_aton and by URL parsers, and no top-level domain has that form.
//     IPv6 literals are refused by the byte rule (':', '[').
//
// Hyphen placement (LDH's "no leading or trailing hyphen") is not enforced:
// names that break it exist on the Internet and servers accept them.
//
// AppendName does not allocate when it accepts the name and dst has room for
// it (cap(dst) - len(dst) >= MaxNameLen is always enough). On error dst is
// returned unchanged.
func AppendName(dst, raw []byte) ([]byte, error) {
	out, err := hostname.Append(dst, raw)
	if err != nil {
		return dst, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return out, nil
}
