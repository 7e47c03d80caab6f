package policy

import "fmt"

// Verdict is what happens to a flow. The zero value is Deny, so a Decision
// that was never filled in fails closed.
type Verdict uint8

const (
	Deny Verdict = iota
	Allow
)

func (v Verdict) String() string {
	switch v {
	case Deny:
		return "deny"
	case Allow:
		return "allow"
	}
	return fmt.Sprintf("unknown(%d)", uint8(v))
}

func parseVerdict(s string) (Verdict, bool) {
	switch s {
	case "deny":
		return Deny, true
	case "allow":
		return Allow, true
	}
	return Deny, false
}

// Reason says why a flow got its verdict: the decision log's "reason".
// Decide gives ReasonRule or ReasonDefault; the engine gives the others
// when it denies a flow before or instead of the policy.
type Reason uint8

const (
	_                  Reason = iota
	ReasonRule                // a rule matched
	ReasonDefault             // no rule matched: the policy's default
	ReasonDNSMismatch         // the name is allowed, but the destination is not among its DNS answers
	ReasonDNSError            // the name could not be verified: resolver unreachable, SERVFAIL, garbled
	ReasonIncomplete          // the flow head did not complete within hello.timeout
	ReasonMalformed           // the hello or request head is invalid or ambiguous
	ReasonNotTLSOrHTTP        // payload on an inspected port that is neither TLS nor HTTP
	ReasonLimit               // a limit was reached (hello bytes, flow table, held packets)
)

var reasonNames = [...]string{
	ReasonRule:         "rule",
	ReasonDefault:      "default",
	ReasonDNSMismatch:  "dns-mismatch",
	ReasonDNSError:     "dns-error",
	ReasonIncomplete:   "incomplete",
	ReasonMalformed:    "malformed",
	ReasonNotTLSOrHTTP: "not-tls-or-http",
	ReasonLimit:        "limit",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return fmt.Sprintf("unknown(%d)", uint8(r))
}

// Reasons lists every valid reason, in order (for metrics and docs).
func Reasons() []Reason {
	out := make([]Reason, 0, len(reasonNames)-1)
	for r := ReasonRule; int(r) < len(reasonNames); r++ {
		out = append(out, r)
	}
	return out
}

// Proto is a flow's transport protocol. In a rule, ProtoAny (the zero
// value) matches both.
type Proto uint8

const (
	ProtoAny Proto = iota
	TCP
	UDP
)

func (p Proto) String() string {
	switch p {
	case ProtoAny:
		return "any"
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("unknown(%d)", uint8(p))
}

// ParseProto reads "tcp", "udp" or "any".
func ParseProto(s string) (Proto, bool) {
	switch s {
	case "any":
		return ProtoAny, true
	case "tcp":
		return TCP, true
	case "udp":
		return UDP, true
	}
	return ProtoAny, false
}

// DefaultRule is the name a decision carries when no rule matched.
const DefaultRule = "default"

// portRange is an inclusive range of ports, 1..65535.
type portRange struct{ lo, hi uint16 }

func (r portRange) String() string {
	if r.lo == r.hi {
		return fmt.Sprint(r.lo)
	}
	return fmt.Sprintf("%d-%d", r.lo, r.hi)
}

// ParseVerdict reads "allow" or "deny".
func ParseVerdict(s string) (Verdict, bool) { return parseVerdict(s) }

// ParseReason reads a reason as String writes it.
func ParseReason(s string) (Reason, bool) {
	for r, n := range reasonNames {
		if n != "" && n == s {
			return Reason(r), true
		}
	}
	return 0, false
}
