// Package decide is egressd's one decision procedure: from what a flow
// told (its addresses, port and protocol, and what its head said: a name,
// no name, or why it could not be read) and what DNS says, the verdict,
// the reason, the rule and the decision line's fields.
//
// The engine calls it for every flow, `egressd replay` for every flow of
// a capture and for every line of a decision log, and `egressd explain`
// for the one flow it is asked about, so the four cannot drift apart.
// Decide is pure: the caller says what DNS knows (DNS, from a cache that
// never blocks) and, when a decision needs an answer the cache does not
// hold, looks the name up itself and calls Outcome.Resolve with the
// answer.
//
// The procedure, in order:
//
//  1. On a port that carries no name, the policy decides by address:
//     rules with domains match through their literal names' DNS answers.
//  2. Otherwise, a flow the policy decides on its first packet whatever
//     its name (an address rule, a destination every rule denies) is
//     decided so, before its head is read and before any of the engine's
//     limits can refuse it.
//  3. A head that was not read in time, was malformed, or was over a
//     limit is denied for that reason.
//  4. Bytes that are neither TLS nor HTTP are denied unless an address
//     rule allows the destination whatever the name.
//  5. A head with a name is decided by it; one without by address. Deny
//     rules meet both through the DNS answers of their literal names: a
//     nameless flow outright, a named one unless its name is true (a lie
//     never does better than silence).
//  6. An allow that rests on the name holds only if DNS puts the
//     destination among the name's answers: otherwise dns-mismatch, or
//     dns-error when DNS cannot say.
//
// A shadow deny rule (on trial) never changes the verdict: when the flow
// is allowed and such a rule would have denied it, the line reports the
// shadow rule's deny, not enforced.
package decide

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

// Head is what a flow's head (its first payload bytes) said.
type Head uint8

const (
	Unread       Head = iota // the head is not read yet: the flow's first packet
	Named                    // read: Flow.Name, or "" for a head that names nothing
	NotTLSOrHTTP             // neither a TLS ClientHello nor an HTTP request
	Malformed                // invalid, or ambiguous (two names)
	Incomplete               // not complete within hello.timeout
	Limit                    // over one of the engine's limits
)

var headNames = [...]string{Unread: "unread", Named: "named", NotTLSOrHTTP: "not-tls-or-http",
	Malformed: "malformed", Incomplete: "incomplete", Limit: "limit"}

func (h Head) String() string {
	if int(h) < len(headNames) {
		return headNames[h]
	}
	return fmt.Sprintf("unknown(%d)", uint8(h))
}

// reason is the deny reason of a head that could not be decided by name.
func (h Head) reason() policy.Reason {
	switch h {
	case NotTLSOrHTTP:
		return policy.ReasonNotTLSOrHTTP
	case Malformed:
		return policy.ReasonMalformed
	case Incomplete:
		return policy.ReasonIncomplete
	}
	return policy.ReasonLimit
}

// Flow is what a flow told.
type Flow struct {
	Src, Dst  netip.Addr // IPv4, plain (not 4-in-6)
	Port      uint16     // destination port
	Proto     policy.Proto
	Inspected bool // the port carries a name (inspect_ports)
	Head      Head
	// Name is the normalised name the head carried; valid iff Head is
	// Named (then "" means none), or Limit after the name was read.
	Name string
	From declog.NameFrom // where Name came from: sni, quic or host
	ECH  bool            // the hello carried encrypted_client_hello
}

// DNS is what a decision may know of DNS without waiting.
type DNS interface {
	// Cached says, from a cache and without blocking, whether addr is
	// among the current DNS answers of name (Match), was within the grace
	// after their TTL (Grace), or neither (0: not known).
	Cached(name string, addr netip.Addr) Answer
}

// Evidence is what DNS knew when it found a name's destination elsewhere
// (a dns-mismatch): the decision line says it, so that an operator can
// tell a stale answer from a lie.
type Evidence struct {
	AnswerAge time.Duration // age of the newest answer for the name
	Addrs     int           // addresses held for the name
	Requeried bool          // DNS was asked again for this flow
}

// Answer is how a name that an allow rests on was checked against DNS,
// when the cache could not tell (Outcome.Verify).
type Answer uint8

// The zero Answer is none: Resolve treats it as Error (fail closed).
const (
	_          Answer = iota
	Match             // the destination is among the name's answers
	Grace             // it was, within the grace after their TTL
	Mismatch          // it is not
	Error             // DNS could not say (unreachable, SERVFAIL, timeout)
	Trusted           // nothing checks names (verify_dns off): taken on trust
	Skipped           // replay without --resolve: not checked
	NotChecked        // explain: a daemon would check it
)

// Outcome is a flow's decision, or what is still needed for one.
type Outcome struct {
	// Final is false when the flow's head must be read before it can be
	// decided (Head was Unread and a rule with domains applies). The
	// other fields are then unset.
	Final bool
	// Verify says the allow rests on Name and the DNS cache does not
	// hold the destination among its answers: look it up and call
	// Resolve. Until then the outcome is not a decision.
	Verify bool

	Verdict  policy.Verdict
	Reason   policy.Reason
	Rule     string // the deciding rule, "default", or "" when denied before the policy
	Name     string // as logged
	NameFrom declog.NameFrom
	ECH      bool
	DNSCheck declog.DNSCheck
	// Shadow names a deny rule on trial that would have denied this flow
	// (matched through the answers of ShadowDNSName on a port without a
	// name); it is reported only when the verdict is allow.
	Shadow, ShadowDNSName string
	// DNS is what DNS knew, on a dns-mismatch (set by the caller with the
	// answer it resolved the outcome with).
	DNS Evidence

	lieRule string // the deny rule a false name would meet (policy.Decision.LieRule)
}

// Shadowed reports whether the flow is allowed and logged as a shadow
// rule's deny.
func (o *Outcome) Shadowed() bool { return o.Verdict == policy.Allow && o.Shadow != "" }

// Decider runs the procedure. Its scratch space makes Decide allocation
// free; a Decider is not safe for concurrent use (each engine shard, and
// each replay, owns one).
type Decider struct {
	names []string
}

// Decide decides f with p. dns may be nil: nothing is known of DNS (no
// rule then matches by address through names, and every allow that rests
// on a name needs Resolve).
func (d *Decider) Decide(p *policy.Policy, f *Flow, dns DNS) Outcome {
	q := policy.Query{Src: f.Src, Dst: f.Dst, Port: f.Port, Proto: f.Proto, Inspected: f.Inspected}
	if !f.Inspected {
		// 1. No name on this port: rules with domains match by address.
		q.DNSNames = d.namesAt(p.LiteralNames(), f.Dst, dns)
		return d.fromPolicy(p.Decide(q), f, false)
	}
	// 2. Decided on the first packet whatever the name.
	q.Pending = true
	if pd := p.Decide(q); pd.Final {
		return d.fromPolicy(pd, f, false)
	}
	q.Pending = false
	switch f.Head {
	case Unread:
		return Outcome{}
	case Named:
	case NotTLSOrHTTP:
		// 4. Nameless: an address rule may still allow it; deny rules
		// meet it by address.
		q.DNSNames = d.namesAt(p.DenyLiteralNames(), f.Dst, dns)
		if pd := p.Decide(q); pd.Verdict == policy.Allow && pd.Reason == policy.ReasonRule {
			return d.fromPolicy(pd, f, false)
		}
		return deny(f, policy.ReasonNotTLSOrHTTP)
	default:
		// 3. Incomplete, malformed, over a limit.
		return deny(f, f.Head.reason())
	}
	// 5. By name, or by address for a head without one.
	q.Name = f.Name
	q.DNSNames = d.namesAt(p.DenyLiteralNames(), f.Dst, dns)
	pd := p.Decide(q)
	o := d.fromPolicy(pd, f, true)
	if pd.Verdict != policy.Allow || !pd.Verify {
		return o
	}
	// 6. The allow rests on the name: it must be where DNS puts it. An
	// address in its grace is asked about (the name's answers may have
	// lapsed: DNS refreshes them first), so only a fresh one answers here.
	if dns != nil && dns.Cached(f.Name, f.Dst) == Match {
		o.DNSCheck = declog.CheckVerified
		return o
	}
	o.Verify = true
	return o
}

// Resolve completes an outcome that needed DNS (Verify) with the answer.
// On an outcome that did not need it, it does nothing.
func (o Outcome) Resolve(a Answer) Outcome {
	if !o.Verify {
		return o
	}
	o.Verify = false
	switch a {
	case Match:
		o.DNSCheck = declog.CheckVerified
	case Grace:
		o.DNSCheck = declog.CheckGrace
	case Trusted:
		o.DNSCheck = declog.CheckTrusted
	case Skipped:
		o.DNSCheck = declog.CheckSkipped
	case NotChecked:
		o.DNSCheck = declog.CheckNotChecked
	case Mismatch:
		// The name is not where DNS puts it. Had it been left out, the
		// deny rule it steps around (if any) would have denied the flow:
		// the line names that rule.
		o.Verdict, o.Reason, o.Rule, o.DNSCheck = policy.Deny, policy.ReasonDNSMismatch, o.lieRule, declog.CheckNone
		o.Shadow, o.ShadowDNSName = "", ""
	default:
		o.Verdict, o.Reason, o.Rule, o.DNSCheck = policy.Deny, policy.ReasonDNSError, "", declog.CheckNone
		o.Shadow, o.ShadowDNSName = "", ""
	}
	return o
}

// Fill writes the outcome's fields into a decision line. r.Enforced must
// already say whether the mode enforces; a shadow deny clears it.
func (o *Outcome) Fill(r *declog.Record) {
	r.Undecided = false
	r.Verdict, r.Reason, r.Rule = o.Verdict, o.Reason, o.Rule
	r.Name, r.NameFrom, r.ECH, r.DNSCheck = o.Name, o.NameFrom, o.ECH, o.DNSCheck
	r.DNSAnswerAge, r.DNSAddrs, r.DNSRequeried = 0, 0, false
	if o.Reason == policy.ReasonDNSMismatch {
		r.DNSAnswerAge, r.DNSAddrs, r.DNSRequeried = o.DNS.AnswerAge, o.DNS.Addrs, o.DNS.Requeried
	}
	if o.Shadowed() {
		// What the rule on trial would have done; the allow stands.
		r.Verdict, r.Rule, r.Reason, r.Enforced = policy.Deny, o.Shadow, policy.ReasonRule, false
		if o.ShadowDNSName != "" {
			r.Name, r.NameFrom = o.ShadowDNSName, declog.FromDNS
		}
	}
}

// Deny is the outcome of a flow denied before the policy, for a reason of
// the engine's own (limit, incomplete); the name read, if any, is kept.
func Deny(f *Flow, reason policy.Reason) Outcome { return deny(f, reason) }

func deny(f *Flow, reason policy.Reason) Outcome {
	o := Outcome{Final: true, Verdict: policy.Deny, Reason: reason, NameFrom: declog.FromNone}
	if f.Name != "" && f.From.Read() {
		o.Name, o.NameFrom, o.ECH = f.Name, f.From, f.ECH
	}
	return o
}

// fromPolicy turns a policy decision into an outcome; named says the
// flow's head was read (its name, if any, is logged).
func (d *Decider) fromPolicy(pd policy.Decision, f *Flow, named bool) Outcome {
	o := Outcome{Final: true, Verdict: pd.Verdict, Reason: pd.Reason, Rule: pd.Rule,
		Shadow: pd.ShadowRule, ShadowDNSName: pd.ShadowDNSName, lieRule: pd.LieRule, NameFrom: declog.FromNone}
	if named {
		o.ECH = f.ECH
		if f.Name != "" {
			o.Name, o.NameFrom = f.Name, f.From
		}
	}
	if pd.DNSName != "" {
		o.Name, o.NameFrom, o.DNSCheck = pd.DNSName, declog.FromDNS, declog.CheckVerified
	}
	return o
}

// namesAt returns the names of list whose cached answers include dst.
func (d *Decider) namesAt(list []string, dst netip.Addr, dns DNS) []string {
	d.names = d.names[:0]
	if dns == nil {
		return nil
	}
	for _, n := range list {
		if dns.Cached(n, dst) != 0 {
			d.names = append(d.names, n)
		}
	}
	return d.names
}
