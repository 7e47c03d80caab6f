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

// TestNameChecksAgree feeds the same names to the three checks. On the
// code before the checks were made one (issue 12) they disagree, and the
// table records each one's answer.
func TestNameChecksAgree(t *testing.T) {
	l63 := strings.Repeat("a", 63)
	n253 := l63 + "." + l63 + "." + l63 + "." + strings.Repeat("a", 61)
	tests := []struct {
		in                        string
		classify, policy, resolve string
	}{
		// Where they agree.
		{"Example.COM.", "example.com", "example.com", "example.com"},
		{"_acme-challenge.example.com", "_acme-challenge.example.com", "_acme-challenge.example.com", "_acme-challenge.example.com"},
		{"XN--Bcher-Kva.example", "xn--bcher-kva.example", "xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"localhost", "localhost", "localhost", "localhost"},
		{"1.example.test", "1.example.test", "1.example.test", "1.example.test"},
		{"example.0xg", "example.0xg", "example.0xg", "example.0xg"},
		{l63 + ".test", l63 + ".test", l63 + ".test", l63 + ".test"},
		{n253 + ".", n253, n253, n253},
		{n253 + "a", refused, refused, refused},
		{l63 + "a.test", refused, refused, refused},
		{"", refused, refused, refused},
		{".", refused, refused, refused},
		{"a..example.com", refused, refused, refused},
		{"example.com..", refused, refused, refused},
		{".example.com", refused, refused, refused},
		{"exa mple.com", refused, refused, refused},
		{"a*.example.com", refused, refused, refused},
		{"*.example.com", refused, refused, refused},
		{"a\x00.example.com", refused, refused, refused},
		{"example.com:443", refused, refused, refused},
		{"2001:db8::1", refused, refused, refused},
		{"[2001:db8::1]", refused, refused, refused},

		// Where they disagree.
		{"-lead.example.com", "-lead.example.com", refused, "-lead.example.com"},
		{"trail-.example.com", "trail-.example.com", refused, "trail-.example.com"},
		{"192.0.2.1", refused, refused, "192.0.2.1"},
		{"192.0.2.1.", refused, refused, "192.0.2.1"},
		{"127.1", refused, "127.1", "127.1"},
		{"2130706433", refused, "2130706433", "2130706433"},
		{"0x7f.0x1", refused, "0x7f.0x1", "0x7f.0x1"},
		{"example.123", refused, "example.123", "example.123"},
		{"EXAMPLE.0X7F", refused, "example.0x7f", "example.0x7f"},
		{"bücher.example", refused, "xn--bcher-kva.example", refused},
		{"example\u3002com", refused, "example.com", refused},
		{"A\u212a.example", refused, "ak.example", "ak.example"},
		{"xn--zz--.example", "xn--zz--.example", refused, "xn--zz--.example"},
		{"-lead.bücher.example", refused, refused, refused},
	}
	for _, tt := range tests {
		want := []string{tt.classify, tt.policy, tt.resolve}
		for i, c := range nameChecks {
			got, err := c.check(tt.in)
			if err != nil {
				got = refused
			}
			if got != want[i] {
				t.Errorf("%s(%q) = %q (%v), want %q", c.name, tt.in, got, err, want[i])
			}
		}
	}
}
