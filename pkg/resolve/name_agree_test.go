package resolve_test

import (
	"strings"
	"testing"

	"github.com/egressd/egressd/pkg/classify"
	"github.com/egressd/egressd/pkg/policy"
	"github.com/egressd/egressd/pkg/resolve"
)

// refused stands for a name a check refuses.
const refused = "(refused)"

// nameChecks are the three places that check and normalise host names:
// classify for names off the wire (TLS SNI, QUIC SNI, HTTP Host), policy
// for names in a policy file (and explain's --name), resolve for the names
// it asks DNS about.
var nameChecks = []struct {
	name  string
	check func(string) (string, error)
}{
	{"classify", func(s string) (string, error) {
		b, err := classify.AppendName(nil, []byte(s))
		return string(b), err
	}},
	{"policy", policy.NormalizeName},
	{"resolve", resolve.Normalize},
}

// TestNameChecksAgree feeds the same names to the three checks, which
// since issue 12 are one (internal/hostname): they must agree, but for
// policy's conversion of internationalised names people write (IDNA,
// RFC 5891 §5), which the other two never see (names off the wire are
// ASCII, RFC 6066 §3; resolve asks the names policy normalised).
//
// Before issue 12 they disagreed on the cases of the second part; why says
// what each said then and why the answer is now the one it is.
func TestNameChecksAgree(t *testing.T) {
	l63 := strings.Repeat("a", 63)
	n253 := l63 + "." + l63 + "." + l63 + "." + strings.Repeat("a", 61)
	tests := []struct {
		in     string
		want   string // what the three say
		policy string // what policy says instead, from its IDNA step; "" for want
		why    string
	}{
		// They always agreed.
		{in: "Example.COM.", want: "example.com"},
		{in: "_acme-challenge.example.com", want: "_acme-challenge.example.com"},
		{in: "XN--Bcher-Kva.example", want: "xn--bcher-kva.example"},
		{in: "localhost", want: "localhost"},
		{in: "1.example.test", want: "1.example.test"},
		{in: "example.0xg", want: "example.0xg"},
		{in: l63 + ".test", want: l63 + ".test"},
		{in: n253 + ".", want: n253},
		{in: n253 + "a", want: refused},
		{in: l63 + "a.test", want: refused},
		{in: "", want: refused},
		{in: ".", want: refused},
		{in: "a..example.com", want: refused},
		{in: "example.com..", want: refused},
		{in: ".example.com", want: refused},
		{in: "exa mple.com", want: refused},
		{in: "a*.example.com", want: refused},
		{in: "*.example.com", want: refused},
		{in: "a\x00.example.com", want: refused},
		{in: "example.com:443", want: refused},
		{in: "2001:db8::1", want: refused},
		{in: "[2001:db8::1]", want: refused},
		{in: "-lead.bücher.example", want: refused},

		// They disagreed (before: classify / policy / resolve).
		{in: "-lead.example.com", want: "-lead.example.com",
			why: "accepted / refused / accepted: LDH's hyphen rule (RFC 1123 §2.1) is broken by names clients send and servers serve; SNI (RFC 6066 §3) and Host (RFC 9110 §7.2) carry them, so a policy must be able to name them, and matching bytes opens nothing"},
		{in: "trail-.example.com", want: "trail-.example.com", why: "as -lead.example.com"},
		{in: "192.0.2.1", want: refused,
			why: "refused / refused / accepted: an address is no host name (RFC 6066 §3 forbids literal addresses in SNI); asking DNS for it answers nothing a flow could be verified with"},
		{in: "192.0.2.1.", want: refused, why: "as 192.0.2.1"},
		{in: "127.1", want: refused,
			why: "refused / accepted / accepted: inet_aton and URL parsers (WHATWG \"ends in a number\") read a name whose last label is a number as an IPv4 address, and no top-level domain is numeric (RFC 3696 §2), so a policy entry like it can never match a name"},
		{in: "2130706433", want: refused, why: "as 127.1"},
		{in: "0x7f.0x1", want: refused, why: "as 127.1"},
		{in: "example.123", want: refused, why: "as 127.1"},
		{in: "EXAMPLE.0X7F", want: refused, why: "as 127.1"},
		{in: "A\u212a.example", want: refused, policy: "ak.example",
			why: "refused / ak.example / ak.example: resolve lowercased with strings.ToLower, which maps the Kelvin sign to 'k', and took a non-ASCII name for an ASCII one; names off the wire and names asked are ASCII, only policy maps what people type (UTS #46)"},
		{in: "bücher.example", want: refused, policy: "xn--bcher-kva.example", why: "agreed already: policy's IDNA (RFC 5891 §5), wire names are A-labels (RFC 6066 §3)"},
		{in: "example\u3002com", want: refused, policy: "example.com", why: "as bücher.example (UTS #46 maps the ideographic full stop)"},
		{in: "xn--zz--.example", want: "xn--zz--.example", policy: refused,
			why: "agreed already: a configured A-label must be valid punycode (RFC 5891 §5.4), an invalid one on the wire is still a DNS label, and decoding it on the hot path would buy nothing, since no policy name can equal it"},
	}
	for _, tt := range tests {
		for _, c := range nameChecks {
			want := tt.want
			if c.name == "policy" && tt.policy != "" {
				want = tt.policy
			}
			got, err := c.check(tt.in)
			if err != nil {
				got = refused
			}
			if got != want {
				t.Errorf("%s(%q) = %q (%v), want %q %s", c.name, tt.in, got, err, want, tt.why)
			}
		}
	}
}
