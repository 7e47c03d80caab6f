package decide

import (
	"net/netip"
	"testing"

	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

const testPolicy = `
version: 1
default: deny
rules:
  - {name: web, domains: [allowed.example, .api.example], ports: [443, 80], action: allow}
  - {name: blocked, domains: [.paste.example], action: deny}
  - {name: partner, cidrs: [198.51.100.0/24], ports: [22, 443], action: allow}
  - {name: ssh-by-name, domains: [git.example], ports: [22], action: allow}
  - {name: anywhere-http, cidrs: [192.0.2.0/24], ports: [8080], action: allow}
  - {name: trial, domains: [trial.example, allowed.example], action: deny, shadow: true}
`

var (
	client  = netip.MustParseAddr("10.0.1.7")
	web     = netip.MustParseAddr("203.0.113.10")
	paste   = netip.MustParseAddr("203.0.113.66")
	partner = netip.MustParseAddr("198.51.100.9")
)

// cache is a DNS cache of fixed answers.
type cache map[string]netip.Addr

func (c cache) Cached(name string, a netip.Addr) Answer {
	if v, ok := c[name]; ok && v == a {
		return Match
	}
	return 0
}

var answers = cache{"allowed.example": web, "paste.example": paste, "git.example": web, "other.example": paste}

func mustPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("p.yaml", []byte(testPolicy), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func tls(dst netip.Addr, name string) Flow {
	return Flow{Src: client, Dst: dst, Port: 443, Proto: policy.TCP, Inspected: true, Head: Named, Name: name, From: declog.FromSNI}
}

type want struct {
	final, verify bool
	verdict       policy.Verdict
	reason        policy.Reason
	rule, name    string
	from          declog.NameFrom
	check         declog.DNSCheck
	shadow        string
}

func (w want) check1(t *testing.T, o Outcome) {
	t.Helper()
	got := want{o.Final, o.Verify, o.Verdict, o.Reason, o.Rule, o.Name, o.NameFrom, o.DNSCheck, o.Shadow}
	if got != w {
		t.Errorf("outcome %+v\n want %+v", got, w)
	}
}

// TestProcedure walks the procedure's steps (the package comment) one case
// or more each.
func TestProcedure(t *testing.T) {
	p := mustPolicy(t)
	unread := func(dst netip.Addr, port uint16) Flow {
		return Flow{Src: client, Dst: dst, Port: port, Proto: policy.TCP, Inspected: port == 443 || port == 80}
	}
	withHead := func(f Flow, h Head) Flow { f.Head = h; return f }
	for _, tc := range []struct {
		name string
		f    Flow
		dns  DNS
		want want
	}{
		{"1: no name on the port, a literal name's answers match", unread(web, 22), answers,
			// (the shadow rule's allowed.example resolves there too)
			want{true, false, policy.Allow, policy.ReasonRule, "ssh-by-name", "git.example", declog.FromDNS, declog.CheckVerified, "trial"}},
		{"1: no name on the port, no DNS, no match", unread(web, 22), nil,
			want{true, false, policy.Deny, policy.ReasonDefault, "default", "", declog.FromNone, declog.CheckNone, ""}},
		{"2: an address rule decides on the first packet", unread(partner, 22), answers,
			want{true, false, policy.Allow, policy.ReasonRule, "partner", "", declog.FromNone, declog.CheckNone, ""}},
		{"2: the head must be read", unread(web, 443), answers, want{}},
		{"3: incomplete", withHead(unread(web, 443), Incomplete), answers,
			want{true, false, policy.Deny, policy.ReasonIncomplete, "", "", declog.FromNone, declog.CheckNone, ""}},
		{"3: an address rule still decides an incomplete flow on its first packet", withHead(unread(partner, 22), Incomplete), answers,
			want{true, false, policy.Allow, policy.ReasonRule, "partner", "", declog.FromNone, declog.CheckNone, ""}},
		{"3: a limit after the name was read keeps the name", func() Flow { f := tls(web, "allowed.example"); f.Head = Limit; return f }(), answers,
			want{true, false, policy.Deny, policy.ReasonLimit, "", "allowed.example", declog.FromSNI, declog.CheckNone, ""}},
		{"4: not TLS, no address rule", withHead(unread(web, 443), NotTLSOrHTTP), answers,
			want{true, false, policy.Deny, policy.ReasonNotTLSOrHTTP, "", "", declog.FromNone, declog.CheckNone, ""}},
		{"4: not TLS, an address rule allows", withHead(unread(partner, 443), NotTLSOrHTTP), answers,
			want{true, false, policy.Allow, policy.ReasonRule, "partner", "", declog.FromNone, declog.CheckNone, ""}},
		{"5: a denied name", tls(web, "www.paste.example"), answers,
			want{true, false, policy.Deny, policy.ReasonRule, "blocked", "www.paste.example", declog.FromSNI, declog.CheckNone, ""}},
		{"5: no name, at a denied name's address", tls(paste, ""), answers,
			want{true, false, policy.Deny, policy.ReasonRule, "blocked", "paste.example", declog.FromDNS, declog.CheckVerified, ""}},
		{"5: no name, elsewhere", tls(partner, ""), answers,
			want{true, false, policy.Allow, policy.ReasonRule, "partner", "", declog.FromNone, declog.CheckNone, ""}},
		{"5: no name, where only a shadow deny's name resolves", tls(web, ""), answers,
			want{true, false, policy.Deny, policy.ReasonDefault, "default", "", declog.FromNone, declog.CheckNone, "trial"}},
		{"6: an allowed name, in the cache", tls(web, "allowed.example"), answers,
			want{true, false, policy.Allow, policy.ReasonRule, "web", "allowed.example", declog.FromSNI, declog.CheckVerified, "trial"}},
		{"6: an allowed name, not in the cache", tls(web, "x.api.example"), answers,
			want{true, true, policy.Allow, policy.ReasonRule, "web", "x.api.example", declog.FromSNI, declog.CheckNone, ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d Decider
			tc.want.check1(t, d.Decide(p, &tc.f, tc.dns))
		})
	}
}

// TestResolve: each answer to an allow that rests on a name.
func TestResolve(t *testing.T) {
	p := mustPolicy(t)
	var d Decider
	f := tls(web, "x.api.example")
	o := d.Decide(p, &f, answers)
	if !o.Verify {
		t.Fatalf("%+v needs no DNS", o)
	}
	for a, w := range map[Answer]want{
		Match:      {true, false, policy.Allow, policy.ReasonRule, "web", "x.api.example", declog.FromSNI, declog.CheckVerified, ""},
		Grace:      {true, false, policy.Allow, policy.ReasonRule, "web", "x.api.example", declog.FromSNI, declog.CheckGrace, ""},
		Trusted:    {true, false, policy.Allow, policy.ReasonRule, "web", "x.api.example", declog.FromSNI, declog.CheckTrusted, ""},
		Skipped:    {true, false, policy.Allow, policy.ReasonRule, "web", "x.api.example", declog.FromSNI, declog.CheckSkipped, ""},
		NotChecked: {true, false, policy.Allow, policy.ReasonRule, "web", "x.api.example", declog.FromSNI, declog.CheckNotChecked, ""},
		Mismatch:   {true, false, policy.Deny, policy.ReasonDNSMismatch, "", "x.api.example", declog.FromSNI, declog.CheckNone, ""},
		Error:      {true, false, policy.Deny, policy.ReasonDNSError, "", "x.api.example", declog.FromSNI, declog.CheckNone, ""},
		0:          {true, false, policy.Deny, policy.ReasonDNSError, "", "x.api.example", declog.FromSNI, declog.CheckNone, ""},
	} {
		w.check1(t, o.Resolve(a))
	}
	// An outcome that needed nothing is not changed.
	g := tls(web, "allowed.example")
	done := d.Decide(p, &g, answers)
	if done.Resolve(Mismatch) != done {
		t.Errorf("Resolve changed a decided outcome")
	}
}

// TestFalseName: a name that steps around a deny rule by address must be
// true: verified, it is allowed; not, it is denied, naming the rule that a
// flow without a name meets.
func TestFalseName(t *testing.T) {
	p, err := policy.Parse("p.yaml", []byte(`
version: 1
default: deny
rules:
  - {name: anywhere, cidrs: [0.0.0.0/0], action: allow}
  - {name: blocked, domains: [.paste.example], action: deny}
`), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var d Decider
	silent := tls(paste, "")
	want{true, false, policy.Deny, policy.ReasonRule, "blocked", "paste.example", declog.FromDNS, declog.CheckVerified, ""}.check1(t, d.Decide(p, &silent, answers))
	lie := tls(paste, "made-up.example")
	o := d.Decide(p, &lie, answers)
	want{true, true, policy.Allow, policy.ReasonRule, "anywhere", "made-up.example", declog.FromSNI, declog.CheckNone, ""}.check1(t, o)
	want{true, false, policy.Deny, policy.ReasonDNSMismatch, "blocked", "made-up.example", declog.FromSNI, declog.CheckNone, ""}.check1(t, o.Resolve(Mismatch))
	cotenant := tls(paste, "other.example")
	want{true, false, policy.Allow, policy.ReasonRule, "anywhere", "other.example", declog.FromSNI, declog.CheckVerified, ""}.check1(t, d.Decide(p, &cotenant, answers))
}

// TestFillShadow: an allowed flow that a shadow rule would deny is logged
// as that rule's deny, not enforced; the verdict stays allow.
func TestFillShadow(t *testing.T) {
	p := mustPolicy(t)
	var d Decider
	f := tls(web, "allowed.example")
	o := d.Decide(p, &f, answers)
	r := declog.Record{Enforced: true}
	o.Fill(&r)
	if o.Verdict != policy.Allow || !o.Shadowed() || r.Verdict != policy.Deny || r.Rule != "trial" || r.Enforced || r.Reason != policy.ReasonRule {
		t.Errorf("outcome %+v, line %+v", o, r)
	}
}

// TestDecideAllocs: the procedure allocates nothing once its scratch
// space has grown.
func TestDecideAllocs(t *testing.T) {
	p := mustPolicy(t)
	var d Decider
	flows := []Flow{tls(web, "allowed.example"), tls(paste, ""), tls(web, "x.api.example"),
		{Src: client, Dst: web, Port: 22, Proto: policy.TCP}, {Src: client, Dst: web, Port: 443, Proto: policy.TCP, Inspected: true, Head: NotTLSOrHTTP}}
	n := testing.AllocsPerRun(100, func() {
		for i := range flows {
			o := d.Decide(p, &flows[i], answers)
			_ = o.Resolve(Match)
		}
	})
	if n != 0 {
		t.Errorf("%v allocations per run", n)
	}
}
