package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// staticSources resolves selectors from a map keyed by Selector.String().
type staticSources map[string][]netip.Addr

func (s staticSources) Addresses(sel Selector) ([]netip.Addr, bool) {
	a, ok := s[sel.String()]
	return a, ok
}

const workloadPolicy = `
version: 1
default: deny
rules:
  - name: payments
    from:
      - security_groups: [sg-0123456789abcdef0, sg-01234567]
      - tags: {Team: payments, Env: prod}
    domains: [api.stripe.com]
    action: allow
  - name: mixed
    from: [10.0.9.0/24, {tags: {Team: data}}]
    domains: [data.example]
    action: allow
`

// TestWorkloadSources: a selector matches the addresses its sources
// resolve it to; unresolved or empty, it matches nothing (never every
// source); the addresses and CIDRs beside it still match.
func TestWorkloadSources(t *testing.T) {
	p := mustParse(t, workloadPolicy)
	q := func(src, name string) Query {
		return Query{Src: netip.MustParseAddr(src), Dst: server, Port: 443, Proto: TCP, Inspected: true, Name: name}
	}
	if d := p.Decide(q("10.0.2.5", "api.stripe.com")); d.Verdict != Deny {
		t.Errorf("an unresolved selector matched: %+v", d)
	}
	if d := p.Decide(q("10.0.9.5", "data.example")); d.Rule != "mixed" {
		t.Errorf("the CIDR beside a selector: %+v", d)
	}
	want := []string{"{security_groups: [sg-01234567, sg-0123456789abcdef0]}", "{tags: {Env: prod, Team: payments}}", "{tags: {Team: data}}"}
	var got []string
	for _, s := range p.Selectors() {
		got = append(got, s.String())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
	src := staticSources{
		want[0]: {netip.MustParseAddr("10.0.2.5")},
		want[1]: {netip.MustParseAddr("10.0.3.7"), netip.MustParseAddr("10.0.3.8")},
		want[2]: {},
	}
	r := p.WithSources(src)
	for _, tc := range []struct {
		src, name, rule string
	}{
		{"10.0.2.5", "api.stripe.com", "payments"},
		{"10.0.3.8", "api.stripe.com", "payments"},
		{"10.0.2.6", "api.stripe.com", DefaultRule},
		{"10.0.9.5", "data.example", "mixed"},
		{"10.0.3.7", "data.example", DefaultRule},
	} {
		if d := r.Decide(q(tc.src, tc.name)); d.Rule != tc.rule || d != r.Explain(q(tc.src, tc.name)).Decision {
			t.Errorf("%s -> %s: %+v, want rule %s", tc.src, tc.name, d, tc.rule)
		}
		if n := testing.AllocsPerRun(50, func() { r.Decide(q(tc.src, tc.name)) }); n != 0 {
			t.Errorf("Decide allocates %v times with resolved sources", n)
		}
	}
	var uses []string
	for _, u := range r.SelectorUses() {
		uses = append(uses, u.Rule+" "+u.Selector.String()+" "+strings.Repeat("+", u.Count))
	}
	if diff := cmp.Diff([]string{"payments " + want[0] + " +", "payments " + want[1] + " ++", "mixed " + want[2] + " "}, uses); diff != "" {
		t.Errorf("uses (-want +got):\n%s", diff)
	}
	if why := r.Explain(q("10.0.3.7", "data.example")).Rules[1].Why; !strings.Contains(why, "the 0 addresses its selectors resolve to") {
		t.Errorf("explain: %s", why)
	}
	// Expiry keeps the sources.
	if e, _ := r.Expire(r.AsOf()); e.Decide(q("10.0.2.5", "api.stripe.com")).Rule != "payments" {
		t.Error("Expire lost the resolved sources")
	}
	// Load with sources resolves at once.
	l, err := Parse("p.yaml", []byte(workloadPolicy), Options{Sources: src})
	if err != nil || l.Decide(q("10.0.2.5", "api.stripe.com")).Rule != "payments" {
		t.Errorf("Parse with Sources: %v", err)
	}
}

func TestWorkloadSourceErrors(t *testing.T) {
	for _, tc := range []struct{ from, want string }{
		{"[{security_groups: [sg-xyz]}]", `p.yaml:5: rule "r": from: "sg-xyz" is not a security group id (sg- and 8 or 17 hex digits)`},
		{"[{}]", `p.yaml:5: rule "r": an empty from selector; give it security_groups: [sg-...] or tags: {Key: value}`},
		{"[{vpc: vpc-1}]", `p.yaml:5: rule "r": unknown key "vpc" in a from selector; known keys: security_groups, tags`},
		{"[{tags: [Team]}]", `p.yaml:5: rule "r": "tags" must be a mapping of tag keys to values, like tags: {Team: payments}`},
		{"[{tags: {Team: a}}, {tags: {Team: a}}]", `p.yaml:5: rule "r": from: the selector {tags: {Team: a}} is listed twice (first on line 5)`},
	} {
		text := "version: 1\ndefault: deny\nrules:\n  - name: r\n    from: " + tc.from + "\n    domains: [a.example]\n    action: allow\n"
		_, err := Parse("p.yaml", []byte(text), Options{})
		if diff := cmp.Diff(tc.want, errString(err)); diff != "" {
			t.Errorf("from %s (-want +got):\n%s", tc.from, diff)
		}
	}
}
