package policy

import (
	"net/netip"
	"strings"
)

// Query is a flow to decide.
type Query struct {
	Src, Dst netip.Addr // IPv4 addresses are plain (Unmap()ed), not 4-in-6
	Port     uint16     // destination port
	Proto    Proto      // TCP or UDP

	// Inspected says the port carries a name that the engine reads (it is
	// in inspect_ports). On other ports a rule's domains match by address:
	// through DNSNames.
	Inspected bool

	// Pending says the flow head has not been read yet (the engine holds
	// the SYN or the first datagram). Decision.Final then says whether the
	// name could still change the outcome. Name is ignored.
	Pending bool

	// Name is the normalised name read from the flow head (lowercase,
	// punycode, no trailing dot); "" when the flow carried none. Used iff
	// Inspected and not Pending.
	Name string

	// DNSNames are the policy's literal names (LiteralNames) whose current
	// DNS answers include Dst. Used when not Inspected (every rule's
	// domains match through them), and when Inspected and not Pending:
	// deny rules match through them, a nameless flow outright, a named
	// one unless its name is verified at Dst (Decision.LieRule).
	DNSNames []string
}

// Decision is a policy's answer for one flow.
type Decision struct {
	Verdict Verdict
	Reason  Reason // ReasonRule or ReasonDefault
	Rule    string // the deciding rule's name, or "default"
	// RuleIndex is the deciding rule's position among the rules in force
	// (the file's, without the expired ones), or -1 for the default.
	RuleIndex int
	// Final is false only for a Pending query whose outcome depends on the
	// name: read the flow head and ask again. Verdict is then Deny and
	// must not be enforced as the flow's decision.
	Final bool
	// Verify marks an allow that relies on Query.Name: trust it only if
	// Dst is among the name's DNS answers (otherwise deny, dns-mismatch).
	Verify bool
	// DNSName is the literal name through whose DNS answers a rule
	// matched, on a port without a name (name_from "dns"); "" otherwise.
	DNSName string
	// ShadowRule names a deny rule on trial (shadow: true) that matched and
	// would have denied the flow: the fields above are the decision
	// without it, which is what is enforced. When that decision is an
	// allow, the flow is logged as the shadow rule's deny, not enforced.
	ShadowRule string
	// ShadowDNSName is DNSName for the shadow rule's match.
	ShadowDNSName string
	// LieRule names a deny rule that the flow's name steps around: the
	// name matches none of the rule's domains, but Dst is among the DNS
	// answers of one of its literal names (LieDNSName), so a flow without
	// a name would be denied by it. The allow then holds only if the name
	// is verified at Dst (Verify is set): a false name must never do
	// better than no name. Set only on an allow of a named flow.
	LieRule, LieDNSName string
}

// tally collects the rules that match a query and picks the decision.
// Deny rules win over allow rules, then allow, then the default. Within
// each action, a rule that matched without the flow's name (by address,
// source, port) comes before one that matched through the name, and then
// file order decides. Preferring the address match makes the decision the
// same whether it is taken on the SYN, before the name is read, or after:
// a CIDR rule that denies a destination denies it whatever the name, and
// an allow that does not rely on the name needs no DNS verification.
// Decide and Explain share this, so they cannot disagree on precedence.
//
// Deny rules on trial (shadow) are kept apart: they do not take part in
// the enforced decision, and the first that matched (by the same order)
// is reported beside it.
type tally struct {
	denyAddr, denyName, allowAddr, allowName int32 // rule indexes; -1 none
	shadowAddr, shadowName                   int32
	lie                                      int32 // a deny rule the name steps around (Decision.LieRule)
	denyAddrDNS, allowAddrDNS, shadowAddrDNS string
	lieDNS                                   string
	nameMayMatter                            bool // Pending: a rule with domains applies
}

func newTally() tally {
	return tally{denyAddr: -1, denyName: -1, allowAddr: -1, allowName: -1, shadowAddr: -1, shadowName: -1, lie: -1}
}

// add records a matching rule. byName: it matched through the flow's name;
// dnsName: it matched through the DNS answers of that literal name.
func (t *tally) add(i int32, r *rule, byName bool, dnsName string) {
	first := func(cur int32) bool { return cur < 0 || i < cur }
	v := r.action
	switch {
	case r.shadow && byName:
		if first(t.shadowName) {
			t.shadowName = i
		}
	case r.shadow:
		if first(t.shadowAddr) {
			t.shadowAddr, t.shadowAddrDNS = i, dnsName
		}
	case v == Deny && byName:
		if first(t.denyName) {
			t.denyName = i
		}
	case v == Deny:
		if first(t.denyAddr) {
			t.denyAddr, t.denyAddrDNS = i, dnsName
		}
	case byName:
		if first(t.allowName) {
			t.allowName = i
		}
	default:
		if first(t.allowAddr) {
			t.allowAddr, t.allowAddrDNS = i, dnsName
		}
	}
}

// addLie records a deny rule that matched a named flow only through the
// DNS answers of its literal name dnsName.
func (t *tally) addLie(i int32, dnsName string) {
	if t.lie < 0 || i < t.lie {
		t.lie, t.lieDNS = i, dnsName
	}
}

func (t *tally) decision(p *Policy, q *Query) Decision {
	d := Decision{Final: true, RuleIndex: -1}
	switch {
	case t.denyAddr >= 0:
		d.Verdict, d.Reason, d.RuleIndex, d.DNSName = Deny, ReasonRule, int(t.denyAddr), t.denyAddrDNS
	case t.denyName >= 0:
		d.Verdict, d.Reason, d.RuleIndex = Deny, ReasonRule, int(t.denyName)
	case q.Pending && t.nameMayMatter:
		// A rule with domains applies to this flow, so its name can
		// change the outcome: no verdict until the head is read.
		d.Verdict, d.Final = Deny, false
		return d
	case t.allowAddr >= 0:
		d.Verdict, d.Reason, d.RuleIndex, d.DNSName = Allow, ReasonRule, int(t.allowAddr), t.allowAddrDNS
	case t.allowName >= 0:
		d.Verdict, d.Reason, d.RuleIndex, d.Verify = Allow, ReasonRule, int(t.allowName), true
	default:
		d.Verdict, d.Reason = p.def, ReasonDefault
		// A default allow still relies on the name: it was allowed
		// because the name matched no deny rule, and a name not tied to
		// the destination proves nothing.
		d.Verify = p.def == Allow && q.Inspected && !q.Pending && q.Name != ""
	}
	if d.RuleIndex >= 0 {
		d.Rule = p.rules[d.RuleIndex].name
	} else {
		d.Rule = DefaultRule
	}
	switch {
	case t.shadowAddr >= 0:
		d.ShadowRule, d.ShadowDNSName = p.rules[t.shadowAddr].name, t.shadowAddrDNS
	case t.shadowName >= 0:
		d.ShadowRule = p.rules[t.shadowName].name
	}
	if d.Verdict == Allow && t.lie >= 0 {
		// Without its name this flow would be denied by that rule, so
		// the allow rests on the name: it must be true (verified at Dst).
		d.Verify, d.LieRule, d.LieDNSName = true, p.rules[t.lie].name, t.lieDNS
	}
	return d
}

// Decide returns the policy's decision for q. It allocates nothing and
// costs a few map lookups per label of the name and per prefix length in
// use, whatever the number of rules.
func (p *Policy) Decide(q Query) Decision {
	t := newTally()

	// Rules that match by address alone: cidrs and no domains.
	for _, b := range p.cidrOnly.lens(q.Dst) {
		list, ok := p.cidrOnly.lookup(q.Dst, b)
		if !ok {
			continue
		}
		for _, i := range list {
			r := &p.rules[i]
			if r.appliesTo(q.Src, q.Port, q.Proto) {
				t.add(i, r, false, "")
			}
		}
	}

	switch {
	case !q.Inspected:
		// No name on this port: a rule's literal names match when the
		// destination is among their DNS answers.
		for _, n := range q.DNSNames {
			for _, i := range p.literal[n] {
				r := &p.rules[i]
				if r.appliesTo(q.Src, q.Port, q.Proto) && (r.cidrs.empty() || r.cidrs.contains(q.Dst)) {
					t.add(i, r, false, n)
				}
			}
		}
	case q.Pending:
		if t.denyAddr < 0 {
			t.nameMayMatter = p.nameRuleApplies(&q)
		}
	case q.Name != "":
		p.matchName(&t, &q)
		// A deny rule also meets a named flow by DNS address, as it meets
		// a nameless one, unless the name proves true (Decision.LieRule):
		// otherwise any false name would beat a deny list that silence
		// does not.
		for _, n := range q.DNSNames {
			for _, i := range p.literal[n] {
				r := &p.rules[i]
				if r.action == Deny && !r.shadow && r.appliesTo(q.Src, q.Port, q.Proto) && (r.cidrs.empty() || r.cidrs.contains(q.Dst)) {
					t.addLie(i, n)
				}
			}
		}
	default:
		// A flow on an inspected port that carries no name (a hello
		// without SNI, HTTP/1.0 without Host) is allowed only by address,
		// but a deny rule still matches it by DNS address: otherwise
		// leaving the name out would step around a deny list.
		for _, n := range q.DNSNames {
			for _, i := range p.literal[n] {
				r := &p.rules[i]
				if r.action == Deny && r.appliesTo(q.Src, q.Port, q.Proto) && (r.cidrs.empty() || r.cidrs.contains(q.Dst)) {
					t.add(i, r, false, n)
				}
			}
		}
	}
	return t.decision(p, &q)
}

// matchName walks the name's suffixes at label boundaries: the whole name
// selects exact and ".x" patterns on it, each proper suffix selects "*.x"
// and ".x" patterns on that suffix.
func (p *Policy) matchName(t *tally, q *Query) {
	name := q.Name
	for i := 0; ; {
		if e := p.names[name[i:]]; e != nil {
			list := e.under
			if i == 0 {
				list = e.self
			}
			for _, ri := range list {
				r := &p.rules[ri]
				if r.appliesTo(q.Src, q.Port, q.Proto) && (r.cidrs.empty() || r.cidrs.contains(q.Dst)) {
					t.add(ri, r, true, "")
				}
			}
		}
		dot := strings.IndexByte(name[i:], '.')
		if dot < 0 {
			return
		}
		i += dot + 1
	}
}

// nameRuleApplies reports whether a rule with domains applies to the flow
// by everything but its name: the name read later could then change the
// outcome.
func (p *Policy) nameRuleApplies(q *Query) bool {
	list, ok := p.byPort[portKey{q.Proto, q.Port}]
	if !ok {
		list = p.named // a port the policy was not compiled to inspect
	}
	for _, i := range list {
		r := &p.rules[i]
		if r.appliesTo(q.Src, q.Port, q.Proto) && (r.cidrs.empty() || r.cidrs.contains(q.Dst)) {
			return true
		}
	}
	return false
}
