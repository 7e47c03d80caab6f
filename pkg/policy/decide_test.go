package policy

import (
	"net/netip"
	"strings"
	"testing"
)

// mustParse compiles a policy from YAML text for a test.
func mustParse(t testing.TB, text string) *Policy {
	t.Helper()
	p, err := Parse("test.yaml", []byte(text), Options{})
	if err != nil {
		t.Fatalf("policy does not compile:\n%v\npolicy:\n%s", err, text)
	}
	return p
}

var (
	client = netip.MustParseAddr("10.0.1.7")
	other  = netip.MustParseAddr("10.0.9.9")
	server = netip.MustParseAddr("203.0.113.10")
)

// tlsQuery is a TCP/443 flow carrying name in its SNI.
func tlsQuery(name string) Query {
	return Query{Src: client, Dst: server, Port: 443, Proto: TCP, Inspected: true, Name: name}
}

// matchCase is one flow and the decision design.md's Matching paragraph
// requires for it.
type matchCase struct {
	name    string // "<the sentence checked>: <the case>"
	policy  string
	query   Query
	verdict Verdict
	rule    string
	reason  Reason
}

const exactPolicy = `
version: 1
default: deny
rules:
  - {name: r, domains: [example.com], action: allow}
`

const wildPolicy = `
version: 1
default: deny
rules:
  - {name: r, domains: ["*.example.com"], action: allow}
`

const dotPolicy = `
version: 1
default: deny
rules:
  - {name: r, domains: [.example.com], action: allow}
`

// TestMatchingParagraph checks every sentence of design.md's "Matching"
// paragraph, one case or more per sentence, through Decide and Explain.
func TestMatchingParagraph(t *testing.T) {
	const (
		sNormal   = "names are compared case-insensitively, without a trailing dot, in punycode"
		sExact    = "example.com matches only itself"
		sWild     = "*.example.com matches any subdomain at any depth but not the apex"
		sDot      = ".example.com matches the apex and every subdomain"
		sBoth     = "a rule with both domains and cidrs needs both to match"
		sPrec     = "deny rules win over allow rules; then allow; then default"
		sNames    = "every decision names the rule that made it (or default)"
		sByAddr   = "on a port that carries no name, a rule's domains match by address (for .example.com, the apex)"
		sWildAddr = "*. entries cannot be resolved and never match there"
		sLimits   = "from, ports and proto restrict a rule"
	)
	ssh := func(dnsNames ...string) Query {
		return Query{Src: client, Dst: server, Port: 22, Proto: TCP, DNSNames: dnsNames}
	}
	cases := []matchCase{
		{name: sNormal + ": policy in upper case with a trailing dot matches the lowercase wire name",
			policy: "version: 1\ndefault: deny\nrules:\n  - {name: r, domains: [GitHub.COM.], action: allow}\n",
			query:  tlsQuery("github.com"), verdict: Allow, rule: "r", reason: ReasonRule},
		{name: sNormal + ": an internationalised name in the policy matches its punycode on the wire",
			policy: "version: 1\ndefault: deny\nrules:\n  - {name: r, domains: [bücher.example], action: allow}\n",
			query:  tlsQuery("xn--bcher-kva.example"), verdict: Allow, rule: "r", reason: ReasonRule},
		{name: sNormal + ": a punycode name in the policy matches itself",
			policy: "version: 1\ndefault: deny\nrules:\n  - {name: r, domains: [XN--BCHER-KVA.example], action: allow}\n",
			query:  tlsQuery("xn--bcher-kva.example"), verdict: Allow, rule: "r", reason: ReasonRule},

		{name: sExact + ": the name itself", policy: exactPolicy, query: tlsQuery("example.com"), verdict: Allow, rule: "r", reason: ReasonRule},
		{name: sExact + ": not a subdomain", policy: exactPolicy, query: tlsQuery("www.example.com"), verdict: Deny, rule: "default", reason: ReasonDefault},
		{name: sExact + ": not a longer name with the same ending", policy: exactPolicy, query: tlsQuery("badexample.com"), verdict: Deny, rule: "default", reason: ReasonDefault},
		{name: sExact + ": not the parent", policy: exactPolicy, query: tlsQuery("com"), verdict: Deny, rule: "default", reason: ReasonDefault},

		{name: sWild + ": one level down", policy: wildPolicy, query: tlsQuery("www.example.com"), verdict: Allow, rule: "r", reason: ReasonRule},
		{name: sWild + ": three levels down", policy: wildPolicy, query: tlsQuery("a.b.c.example.com"), verdict: Allow, rule: "r", reason: ReasonRule},
		{name: sWild + ": not the apex", policy: wildPolicy, query: tlsQuery("example.com"), verdict: Deny, rule: "default", reason: ReasonDefault},
		{name: sWild + ": not a longer name with the same ending", policy: wildPolicy, query: tlsQuery("x.badexample.com"), verdict: Deny, rule: "default", reason: ReasonDefault},

		{name: sDot + ": the apex", policy: dotPolicy, query: tlsQuery("example.com"), verdict: Allow, rule: "r", reason: ReasonRule},
		{name: sDot + ": a subdomain", policy: dotPolicy, query: tlsQuery("a.b.example.com"), verdict: Allow, rule: "r", reason: ReasonRule},
		{name: sDot + ": not a longer name with the same ending", policy: dotPolicy, query: tlsQuery("notexample.com"), verdict: Deny, rule: "default", reason: ReasonDefault},

		{name: sBoth + ": name and address match", policy: bothPolicy, query: tlsQuery("example.com"), verdict: Allow, rule: "both", reason: ReasonRule},
		{name: sBoth + ": name matches, address does not", policy: bothPolicy,
			query: Query{Src: client, Dst: netip.MustParseAddr("198.51.100.1"), Port: 443, Proto: TCP, Inspected: true, Name: "example.com"}, verdict: Deny, rule: "default", reason: ReasonDefault},
		{name: sBoth + ": address matches, name does not", policy: bothPolicy, query: tlsQuery("example.net"), verdict: Deny, rule: "default", reason: ReasonDefault},
		{name: sBoth + ": address matches, no name", policy: bothPolicy, query: tlsQuery(""), verdict: Deny, rule: "default", reason: ReasonDefault},

		{name: sPrec + ": a deny rule after an allow rule still wins", policy: precPolicy, query: tlsQuery("evil.example.com"), verdict: Deny, rule: "no-evil", reason: ReasonRule},
		{name: sPrec + ": allow when no deny rule matches", policy: precPolicy, query: tlsQuery("good.example.com"), verdict: Allow, rule: "example", reason: ReasonRule},
		{name: sPrec + ": default when no rule matches", policy: precPolicy, query: tlsQuery("example.org"), verdict: Allow, rule: "default", reason: ReasonDefault},
		{name: sPrec + ": a deny by address wins over an allow by name", policy: precPolicy,
			query: Query{Src: client, Dst: netip.MustParseAddr("198.51.100.7"), Port: 443, Proto: TCP, Inspected: true, Name: "good.example.com"}, verdict: Deny, rule: "no-net", reason: ReasonRule},

		{name: sNames + ": the first of two matching allow rules in file order", policy: twoAllows, query: tlsQuery("a.example.com"), verdict: Allow, rule: "first", reason: ReasonRule},

		{name: sByAddr + ": a literal name whose answers include the destination", policy: sshPolicy, query: ssh("github.com"), verdict: Allow, rule: "ssh", reason: ReasonRule},
		{name: sByAddr + ": the apex of a dot entry", policy: sshPolicy, query: ssh("gitlab.com"), verdict: Allow, rule: "ssh", reason: ReasonRule},
		{name: sByAddr + ": the destination is among no listed name's answers", policy: sshPolicy, query: ssh(), verdict: Deny, rule: "default", reason: ReasonDefault},
		{name: sByAddr + ": a name the policy does not list", policy: sshPolicy, query: ssh("example.net"), verdict: Deny, rule: "default", reason: ReasonDefault},
		{name: sByAddr + ": the name read from the flow does not count there", policy: sshPolicy,
			query: Query{Src: client, Dst: server, Port: 22, Proto: TCP, Name: "github.com"}, verdict: Deny, rule: "default", reason: ReasonDefault},
		{name: sWildAddr + ": the base of a *. entry resolving to the destination", policy: sshPolicy, query: ssh("bitbucket.org"), verdict: Deny, rule: "default", reason: ReasonDefault},

		{name: sLimits + ": from outside the rule's sources", policy: limitPolicy,
			query: Query{Src: other, Dst: server, Port: 443, Proto: TCP, Inspected: true, Name: "example.com"}, verdict: Deny, rule: "default", reason: ReasonDefault},
		{name: sLimits + ": a port the rule does not list", policy: limitPolicy,
			query: Query{Src: client, Dst: server, Port: 8443, Proto: TCP, Inspected: true, Name: "example.com"}, verdict: Deny, rule: "default", reason: ReasonDefault},
		{name: sLimits + ": in a port range", policy: limitPolicy,
			query: Query{Src: client, Dst: server, Port: 9001, Proto: TCP, Inspected: true, Name: "example.com"}, verdict: Allow, rule: "r", reason: ReasonRule},
		{name: sLimits + ": the other protocol", policy: limitPolicy,
			query: Query{Src: client, Dst: server, Port: 443, Proto: UDP, Inspected: true, Name: "example.com"}, verdict: Deny, rule: "default", reason: ReasonDefault},
		{name: sLimits + ": everything holds", policy: limitPolicy, query: tlsQuery("example.com"), verdict: Allow, rule: "r", reason: ReasonRule},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := mustParse(t, tc.policy)
			d := p.Decide(tc.query)
			if d.Verdict != tc.verdict || d.Rule != tc.rule || d.Reason != tc.reason {
				t.Errorf("Decide = %s by %q (%s), want %s by %q (%s)", d.Verdict, d.Rule, d.Reason, tc.verdict, tc.rule, tc.reason)
			}
			if ex := p.Explain(tc.query); ex.Decision != d {
				t.Errorf("Explain decided %+v, Decide %+v", ex.Decision, d)
			}
		})
	}
}

const bothPolicy = `
version: 1
default: deny
rules:
  - {name: both, domains: [example.com, example.org], cidrs: [203.0.113.0/24], action: allow}
  - {name: elsewhere, domains: [example.org], cidrs: [192.0.2.0/24], action: allow}
`

const precPolicy = `
version: 1
default: allow
rules:
  - {name: example, domains: [.example.com], action: allow}
  - {name: no-evil, domains: [evil.example.com], action: deny}
  - {name: no-net, cidrs: [198.51.100.0/24], action: deny}
`

const twoAllows = `
version: 1
default: deny
rules:
  - {name: first, domains: ["*.example.com"], action: allow}
  - {name: second, domains: [a.example.com], action: allow}
`

const sshPolicy = `
version: 1
default: deny
rules:
  - {name: ssh, domains: [github.com, .gitlab.com, "*.bitbucket.org"], ports: [22], action: allow}
`

const limitPolicy = `
version: 1
default: deny
rules:
  - {name: r, from: [10.0.1.0/24], domains: [example.com], ports: [443, 9000-9010], proto: tcp, action: allow}
`

// TestPending checks the SYN-time answer: Final only when no name could
// change the outcome.
func TestPending(t *testing.T) {
	p := mustParse(t, `
version: 1
default: deny
rules:
  - {name: web, domains: [.example.com], ports: [443], action: allow}
  - {name: net, cidrs: [198.51.100.0/24], action: allow}
  - {name: blocked, cidrs: [192.0.2.0/24], action: deny}
  - {name: sub, from: [10.0.5.0/24], domains: [example.org], ports: [443], action: allow}
`)
	syn := func(src, dst string, port uint16) Query {
		return Query{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Port: port, Proto: TCP, Inspected: port == 443 || port == 80, Pending: true}
	}
	for _, tc := range []struct {
		name    string
		q       Query
		final   bool
		verdict Verdict
		rule    string
	}{
		{"a domain rule applies: read the name", syn("10.0.1.7", "203.0.113.10", 443), false, Deny, ""},
		{"a CIDR deny decides whatever the name", syn("10.0.1.7", "192.0.2.1", 443), true, Deny, "blocked"},
		{"no domain rule applies on port 80: default on the SYN", syn("10.0.1.7", "203.0.113.10", 80), true, Deny, "default"},
		{"a CIDR allow with no domain rule on port 80", syn("10.0.1.7", "198.51.100.9", 80), true, Allow, "net"},
		{"a CIDR allow, but a domain rule also applies on 443", syn("10.0.1.7", "198.51.100.9", 443), false, Deny, ""},
		{"a port that is not inspected is final", syn("10.0.1.7", "198.51.100.9", 22), true, Allow, "net"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Decide(tc.q)
			if d.Final != tc.final || (tc.final && (d.Verdict != tc.verdict || d.Rule != tc.rule)) {
				t.Errorf("Decide = %+v; want final=%v %s by %q", d, tc.final, tc.verdict, tc.rule)
			}
			if ex := p.Explain(tc.q); ex.Decision != d {
				t.Errorf("Explain decided %+v, Decide %+v", ex.Decision, d)
			}
		})
	}
	// A rule restricted to other sources does not make the name matter.
	q := syn("10.0.1.7", "203.0.113.10", 443)
	p2 := mustParse(t, "version: 1\ndefault: deny\nrules:\n  - {name: sub, from: [10.0.5.0/24], domains: [example.org], action: allow}\n")
	if d := p2.Decide(q); !d.Final || d.Rule != "default" {
		t.Errorf("a domain rule for other sources made the SYN undecided: %+v", d)
	}
}

// TestVerify checks which allows rely on the name and so need DNS
// verification.
func TestVerify(t *testing.T) {
	p := mustParse(t, `
version: 1
default: deny
rules:
  - {name: named, domains: [example.com], action: allow}
  - {name: net, cidrs: [203.0.113.0/24], ports: [443], action: allow}
`)
	if d := p.Decide(tlsQuery("example.com")); d.Rule != "net" || d.Verify {
		t.Errorf("an address rule that allows whatever the name should be preferred and need no check: %+v", d)
	}
	q := tlsQuery("example.com")
	q.Dst = netip.MustParseAddr("198.51.100.1")
	if d := p.Decide(q); d.Rule != "named" || !d.Verify {
		t.Errorf("an allow by name must ask for verification: %+v", d)
	}
	pa := mustParse(t, "version: 1\ndefault: allow\nrules:\n  - {name: no, domains: [bad.example], action: deny}\n")
	q.Name = "good.example"
	if d := pa.Decide(q); d.Rule != "default" || !d.Verify {
		t.Errorf("a default allow that relied on the name must ask for verification: %+v", d)
	}
	q.Name = "bad.example"
	if d := pa.Decide(q); d.Verdict != Deny || d.Verify {
		t.Errorf("a deny by name needs no lookup: %+v", d)
	}
	ssh := Query{Src: client, Dst: server, Port: 22, Proto: TCP, DNSNames: []string{"example.com"}}
	if d := p.Decide(ssh); d.Rule != "named" || d.Verify || d.DNSName != "example.com" {
		t.Errorf("a match by DNS address is already verified and names its name: %+v", d)
	}
}

func TestDecideAllocsNothing(t *testing.T) {
	p := mustParse(t, `
version: 1
default: deny
rules:
  - {name: a, domains: [.example.com, "*.example.org"], ports: [443], action: allow}
  - {name: b, from: [10.0.0.0/8], cidrs: [203.0.113.0/24], action: allow}
  - {name: c, domains: [evil.example.com], action: deny}
  - {name: d, domains: [github.com], ports: [22], action: allow}
`)
	queries := []Query{
		tlsQuery("www.example.com"),
		tlsQuery("a.b.c.d.example.org"),
		tlsQuery("evil.example.com"),
		{Src: client, Dst: server, Port: 22, Proto: TCP, DNSNames: []string{"github.com"}},
		{Src: client, Dst: server, Port: 443, Proto: TCP, Inspected: true, Pending: true},
	}
	for _, q := range queries {
		if n := testing.AllocsPerRun(100, func() { p.Decide(q) }); n != 0 {
			t.Errorf("Decide(%s) allocates %v times per call, want 0", describe(&q), n)
		}
	}
}

func TestLiteralNames(t *testing.T) {
	p := mustParse(t, sshPolicy)
	if got, want := strings.Join(p.LiteralNames(), ","), "github.com,gitlab.com"; got != want {
		t.Errorf("LiteralNames = %s, want %s (no *. entries)", got, want)
	}
}

// TestShadowRules: a deny rule on trial is reported, never enforced.
func TestShadowRules(t *testing.T) {
	p := mustParse(t, `
version: 1
default: deny
rules:
  - {name: web, domains: [.example.com], action: allow}
  - {name: trial-block, domains: [ads.example.com], action: deny, shadow: true}
  - {name: trial-net, cidrs: [203.0.113.0/24], ports: [22], action: deny, shadow: true}
  - {name: ssh, cidrs: [203.0.113.0/24], ports: [22], action: allow}
`)
	for _, tc := range []struct {
		name         string
		q            Query
		verdict      Verdict
		rule, shadow string
		final        bool
	}{
		{"a shadow deny over an allow: the allow is enforced, the shadow named", tlsQuery("ads.example.com"), Allow, "web", "trial-block", true},
		{"no shadow match", tlsQuery("www.example.com"), Allow, "web", "", true},
		{"a shadow deny where the default denies anyway", tlsQuery("ads.example.com.evil"), Deny, "default", "", true},
		{"a shadow CIDR deny does not decide the SYN", Query{Src: client, Dst: server, Port: 22, Proto: TCP}, Allow, "ssh", "trial-net", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Decide(tc.q)
			if d.Verdict != tc.verdict || d.Rule != tc.rule || d.ShadowRule != tc.shadow || d.Final != tc.final {
				t.Errorf("Decide = %+v; want %s by %q, shadow %q", d, tc.verdict, tc.rule, tc.shadow)
			}
			if ex := p.Explain(tc.q); ex.Decision != d {
				t.Errorf("Explain %+v != Decide %+v", ex.Decision, d)
			}
		})
	}
}

// TestNamelessFlowMeetsDenyByDNS: leaving the name out of a hello does not
// step around a deny list, even under a default allow; it still needs an
// address rule to be allowed where a name would be needed.
func TestNamelessFlowMeetsDenyByDNS(t *testing.T) {
	p := mustParse(t, `
version: 1
default: allow
rules:
  - {name: no-paste, domains: [.pastebin.example], action: deny}
  - {name: web, domains: [ok.example], action: allow}
`)
	q := tlsQuery("")
	q.DNSNames = []string{"pastebin.example"}
	if d := p.Decide(q); d.Verdict != Deny || d.Rule != "no-paste" || d.DNSName != "pastebin.example" {
		t.Errorf("a nameless hello to a denied name's address: %+v", d)
	}
	q.DNSNames = []string{"ok.example"}
	if d := p.Decide(q); d.Rule != "default" {
		t.Errorf("an allow rule matched a nameless flow by DNS: %+v", d)
	}
}

// TestFalseNameDoesNoBetterThanSilence: under an address allow for every
// destination and a name deny, a hello without a name to the denied name's
// address is denied by DNS address; a hello with any other name to that
// address is allowed only if its name is verified there (Verify, LieRule),
// so a false name meets the deny rule as silence does.
func TestFalseNameDoesNoBetterThanSilence(t *testing.T) {
	p := mustParse(t, `
version: 1
default: deny
rules:
  - {name: anywhere, cidrs: [0.0.0.0/0], action: allow}
  - {name: no-paste, domains: [.pastebin.example], action: deny}
  - {name: paste-trial, domains: [paste2.example], action: deny, shadow: true}
`)
	atPaste := []string{"pastebin.example"}
	for _, tc := range []struct {
		name     string
		q        Query
		verdict  Verdict
		rule     string
		verify   bool
		lieRule  string
		lieDNS   string
		dnsName  string
		shadowed string
	}{
		{"no name, at the denied name's address", Query{Name: "", DNSNames: atPaste}, Deny, "no-paste", false, "", "", "pastebin.example", ""},
		{"another name, at the denied name's address", Query{Name: "foo.example", DNSNames: atPaste}, Allow, "anywhere", true, "no-paste", "pastebin.example", "", ""},
		{"the denied name itself", Query{Name: "www.pastebin.example", DNSNames: atPaste}, Deny, "no-paste", false, "", "", "", ""},
		{"another name, elsewhere", Query{Name: "foo.example"}, Allow, "anywhere", false, "", "", "", ""},
		{"a shadow deny's address is not enforced", Query{Name: "foo.example", DNSNames: []string{"paste2.example"}}, Allow, "anywhere", false, "", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.q
			q.Src, q.Dst, q.Port, q.Proto, q.Inspected = client, server, 443, TCP, true
			d := p.Decide(q)
			if d.Verdict != tc.verdict || d.Rule != tc.rule || d.Verify != tc.verify || d.LieRule != tc.lieRule ||
				d.LieDNSName != tc.lieDNS || d.DNSName != tc.dnsName {
				t.Errorf("decision %+v; want %s by %s, verify %v, lie rule %q (%q), dns name %q",
					d, tc.verdict, tc.rule, tc.verify, tc.lieRule, tc.lieDNS, tc.dnsName)
			}
			if ex := p.Explain(q); ex.Decision != d {
				t.Errorf("Explain %+v != Decide %+v", ex.Decision, d)
			}
		})
	}
}
