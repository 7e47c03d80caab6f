package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// expiryPolicy has one permanent rule, one that expires at t1 and one at
// t2 (t1 < t2), and a test on each.
const expiryPolicy = `
version: 1
default: deny
rules:
  - {name: always, domains: [always.example], action: allow}
  - {name: soon, domains: [soon.example], action: allow, expires: 2026-12-24T06:00:00Z}
  - name: later
    domains: [later.example]
    action: allow
    expires: "2026-12-31T00:00:00+00:00"
tests:
  - {src: 10.0.1.7, name: always.example, port: 443, expect: allow, rule: always}
  - {src: 10.0.1.7, name: later.example, port: 443, expect: allow, rule: later}
`

var (
	t1 = time.Date(2026, 12, 24, 6, 0, 0, 0, time.UTC)
	t2 = time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC)
)

func parseAt(t *testing.T, text string, at time.Time) *Policy {
	t.Helper()
	p, err := Parse("test.yaml", []byte(text), Options{At: at})
	if err != nil {
		t.Fatalf("policy does not compile:\n%v", err)
	}
	return p
}

func names(l []RuleExpiry) string {
	var out []string
	for _, e := range l {
		out = append(out, e.Rule+"@"+e.Expires.Format(time.RFC3339))
	}
	return strings.Join(out, ",")
}

// TestExpiresDropsTheRuleAtItsInstant: a rule is in force strictly before
// its expires, not at it; Expire swaps in a policy without it, with the
// same file hash and tests, and reports what it dropped.
func TestExpiresDropsTheRuleAtItsInstant(t *testing.T) {
	p := parseAt(t, expiryPolicy, t1.Add(-time.Second))
	if d := p.Decide(tlsQuery("soon.example")); d.Verdict != Allow || d.Rule != "soon" {
		t.Fatalf("before its expiry the rule must decide: %+v", d)
	}
	if next, ok := p.NextExpiry(); !ok || !next.Equal(t1) {
		t.Errorf("NextExpiry = %v %v, want %v", next, ok, t1)
	}
	if q, gone := p.Expire(t1.Add(-time.Nanosecond)); q != p || gone != nil {
		t.Errorf("Expire before the instant changed the policy: %v", gone)
	}
	q, gone := p.Expire(t1)
	if q == p || names(gone) != "soon@2026-12-24T06:00:00Z" || gone[0].Line != 6 || gone[0].File != "test.yaml" {
		t.Fatalf("Expire at the instant: same policy %v, dropped %+v", q == p, gone)
	}
	if d := q.Decide(tlsQuery("soon.example")); d.Verdict != Deny || d.Rule != DefaultRule {
		t.Errorf("after its expiry the rule still decides: %+v", d)
	}
	if d := q.Decide(tlsQuery("later.example")); d.Verdict != Allow || d.Rule != "later" {
		t.Errorf("a rule not yet expired stopped deciding: %+v", d)
	}
	if q.Hash() != p.Hash() || q.Stats().Tests != 2 || q.Stats().Rules != 2 || q.Stats().Expired != 1 {
		t.Errorf("after expiry: hash %q (was %q), stats %+v", q.Hash(), p.Hash(), q.Stats())
	}
	if fails := q.RunTests(); len(fails) != 0 {
		t.Errorf("tests of rules in force fail: %v", fails)
	}
	if next, ok := q.NextExpiry(); !ok || !next.Equal(t2) {
		t.Errorf("next expiry after the first: %v %v", next, ok)
	}
	r, gone := q.Expire(t2.Add(time.Hour))
	if names(gone) != "later@2026-12-31T00:00:00Z" || names(r.Expired()) != "soon@2026-12-24T06:00:00Z,later@2026-12-31T00:00:00Z" {
		t.Errorf("second expiry dropped %s; expired %s", names(gone), names(r.Expired()))
	}
	if _, ok := r.NextExpiry(); ok {
		t.Error("a policy with no expiring rule in force has a next expiry")
	}
	// The test naming the expired rule now fails, and says why.
	fails := r.RunTests()
	if len(fails) != 1 || fails[0].Line != 13 || !strings.Contains(fails[0].Msg, `expected allow by later (which expired at 2026-12-31T00:00:00Z), got deny by default`) {
		t.Errorf("a test of an expired rule: %v", fails)
	}
	for _, q := range []Query{tlsQuery("always.example"), tlsQuery("later.example")} {
		if n := testing.AllocsPerRun(100, func() { r.Decide(q) }); n != 0 {
			t.Errorf("Decide on an expired-into policy allocates %v times", n)
		}
	}
}

// TestExpiredAtLoad: a policy loaded after a rule's expiry never has it in
// force, and Explain says it expired.
func TestExpiredAtLoad(t *testing.T) {
	p := parseAt(t, expiryPolicy, t1)
	if d := p.Decide(tlsQuery("soon.example")); d.Rule != DefaultRule {
		t.Errorf("an expired rule decides: %+v", d)
	}
	ex := p.Explain(tlsQuery("soon.example"))
	if len(ex.Rules) != 3 || ex.Rules[1].Match || ex.Rules[1].Why != "expired at 2026-12-24T06:00:00Z" || ex.Decision != p.Decide(tlsQuery("soon.example")) {
		t.Errorf("Explain of an expired rule: %+v", ex)
	}
	if d, e := p.Decide(tlsQuery("later.example")), p.Explain(tlsQuery("later.example")); d != e.Decision || d.Rule != "later" {
		t.Errorf("Explain and Decide disagree past an expired rule: %+v vs %+v", d, e.Decision)
	}
}

func TestExpiring(t *testing.T) {
	p := parseAt(t, expiryPolicy, t1.Add(-48*time.Hour))
	for _, tc := range []struct {
		within time.Duration
		want   string
	}{
		{24 * time.Hour, ""},
		{48 * time.Hour, "soon@2026-12-24T06:00:00Z"},
		{7 * 24 * time.Hour, "soon@2026-12-24T06:00:00Z"},
		{14 * 24 * time.Hour, "soon@2026-12-24T06:00:00Z,later@2026-12-31T00:00:00Z"},
	} {
		if got := names(p.Expiring(tc.within)); got != tc.want {
			t.Errorf("Expiring(%s) = %q, want %q", tc.within, got, tc.want)
		}
	}
}

func TestExpiresErrors(t *testing.T) {
	for _, tc := range []struct{ expires, want string }{
		{"2026-12-24", `rule "r": expires "2026-12-24" is not an RFC 3339 time; write it in UTC, like 2026-12-24T06:00:00Z`},
		{"2026-12-24 06:00", `rule "r": expires "2026-12-24 06:00" is not an RFC 3339 time; write it in UTC, like 2026-12-24T06:00:00Z`},
		{"2026-12-24T08:00:00+02:00", `rule "r": expires "2026-12-24T08:00:00+02:00" is not in UTC; write it as 2026-12-24T06:00:00Z`},
		{"[2026-12-24T06:00:00Z]", `rule "r": "expires" must be a single value, not a list`},
	} {
		text := "version: 1\ndefault: deny\nrules:\n  - name: r\n    domains: [a.example]\n    action: allow\n    expires: " + tc.expires + "\n"
		_, err := Parse("p.yaml", []byte(text), Options{})
		want := "p.yaml:7: " + tc.want
		if diff := cmp.Diff(want, errString(err)); diff != "" {
			t.Errorf("expires %s (-want +got):\n%s", tc.expires, diff)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
