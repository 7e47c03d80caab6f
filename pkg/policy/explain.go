package policy

import (
	"fmt"
	"strings"
	"time"
)

// RuleTrace says whether one rule matched a flow, and why (or why not).
type RuleTrace struct {
	Rule   string `json:"rule"`
	File   string `json:"file,omitempty"`  // in a directory, the rule's file
	Owner  string `json:"owner,omitempty"` // its file's owner:
	Line   int    `json:"line"`
	Action string `json:"action"`
	Shadow bool   `json:"shadow,omitempty"`
	Match  bool   `json:"match"`
	Why    string `json:"why"`
}

// Explanation is a decision with every rule considered for it.
type Explanation struct {
	Decision Decision
	Rules    []RuleTrace // every rule of the policy (expired ones too), in file order
}

// Explain decides q like Decide, by evaluating every rule in turn instead
// of through the indexes, and says for each rule why it did or did not
// match. It serves `egressd explain --verbose`, and the tests hold Decide
// to the same answer.
func (p *Policy) Explain(q Query) Explanation {
	t := newTally()
	out := Explanation{Rules: make([]RuleTrace, len(p.all))}
	for j := range p.all {
		r := &p.all[j]
		i := p.pos[j]
		if i < 0 {
			out.Rules[j] = RuleTrace{Rule: r.name, File: r.file, Owner: r.owner, Line: r.line, Action: r.action.String(), Shadow: r.shadow,
				Why: "expired at " + r.expires.Format(time.RFC3339)}
			continue
		}
		m := p.evalRule(r, &q)
		out.Rules[j] = RuleTrace{Rule: r.name, File: r.file, Owner: r.owner, Line: r.line, Action: r.action.String(), Shadow: r.shadow, Match: m.match, Why: m.why}
		switch {
		case m.match:
			t.add(i, r, m.byName, m.dnsName)
		case m.lie:
			t.addLie(i, m.dnsName)
		case m.pendingName:
			t.nameMayMatter = true
		}
	}
	out.Decision = t.decision(p, &q)
	return out
}

type ruleMatch struct {
	match       bool
	byName      bool   // matched through the flow's name
	dnsName     string // matched through this literal name's DNS answers
	pendingName bool   // everything but the (unread) name matches
	lie         bool   // a deny rule the flow's name steps around (Decision.LieRule)
	why         string
}

// evalRule is the reference evaluation of one rule, condition by
// condition, in words.
func (p *Policy) evalRule(r *rule, q *Query) ruleMatch {
	if r.proto != ProtoAny && r.proto != q.Proto {
		return ruleMatch{why: fmt.Sprintf("proto is %s, the flow is %s", r.proto, q.Proto)}
	}
	if len(r.ports) > 0 && !inPorts(r.ports, q.Port) {
		return ruleMatch{why: fmt.Sprintf("port %d is not in its ports (%s)", q.Port, portsString(r.ports))}
	}
	var why []string
	if r.hasFrom {
		pf, ok := r.from.containing(q.Src)
		if !ok {
			msg := fmt.Sprintf("source %s is not in its from list", addrString(q.Src))
			if len(r.selectors) > 0 {
				msg += fmt.Sprintf(" (its addresses and the %d addresses its selectors resolve to)", len(r.from.list)-len(r.fromStatic))
			}
			return ruleMatch{why: msg}
		}
		why = append(why, fmt.Sprintf("source %s is in %s", q.Src, pf))
	}
	if !r.cidrs.empty() {
		pf, ok := r.cidrs.containing(q.Dst)
		if !ok {
			return ruleMatch{why: fmt.Sprintf("destination %s is not in its cidrs", addrString(q.Dst))}
		}
		why = append(why, fmt.Sprintf("destination %s is in %s", q.Dst, pf))
	}
	m := ruleMatch{}
	if len(r.domains) > 0 {
		switch {
		case !q.Inspected:
			for _, n := range q.DNSNames {
				if pat, ok := literalPattern(r, n); ok {
					m.dnsName = n
					why = append(why, fmt.Sprintf("port %d carries no name, and %s is among the DNS answers of %s (from %q)", q.Port, q.Dst, n, pat))
					break
				}
			}
			if m.dnsName == "" {
				msg := fmt.Sprintf("port %d carries no name, and %s is not among the DNS answers of its literal names", q.Port, addrString(q.Dst))
				if allWildcards(r.domains) {
					msg = fmt.Sprintf("port %d carries no name, and \"*.\" entries never match by address", q.Port)
				}
				return ruleMatch{why: msg}
			}
		case q.Pending:
			return ruleMatch{pendingName: true, why: "the flow's name is not read yet; it decides whether this rule matches"}
		case q.Name == "" && r.action == Deny:
			// As Decide: a nameless flow meets deny rules by DNS address.
			for _, n := range q.DNSNames {
				if pat, ok := literalPattern(r, n); ok {
					m.dnsName = n
					why = append(why, fmt.Sprintf("the flow carries no name, and %s is among the DNS answers of %s (from %q)", q.Dst, n, pat))
					break
				}
			}
			if m.dnsName == "" {
				return ruleMatch{why: fmt.Sprintf("the flow carries no name, and %s is not among the DNS answers of the rule's literal names", addrString(q.Dst))}
			}
		case q.Name == "":
			return ruleMatch{why: "the flow carries no name; an allow rule with domains needs one"}
		default:
			pat, ok := matchingPattern(r, q.Name)
			if !ok && r.action == Deny && !r.shadow {
				// As Decide: the deny meets the flow by DNS address unless
				// its name is verified there.
				for _, n := range q.DNSNames {
					if lp, ok := literalPattern(r, n); ok {
						return ruleMatch{lie: true, dnsName: n, why: fmt.Sprintf(
							"name %s matches none of its domains, but %s is among the DNS answers of %s (from %q): it denies the flow unless the name is verified at %s",
							q.Name, q.Dst, n, lp, q.Dst)}
					}
				}
			}
			if !ok {
				return ruleMatch{why: fmt.Sprintf("name %s matches none of its domains", q.Name)}
			}
			m.byName = true
			why = append(why, fmt.Sprintf("name %s matches %q", q.Name, pat))
		}
	}
	if len(why) == 0 {
		why = append(why, "every condition holds")
	}
	m.match = true
	m.why = strings.Join(why, "; ")
	return m
}

func matchingPattern(r *rule, name string) (pattern, bool) {
	for _, pat := range r.domains {
		if pat.matches(name) {
			return pat, true
		}
	}
	return pattern{}, false
}

func literalPattern(r *rule, name string) (pattern, bool) {
	for _, pat := range r.domains {
		if pat.kind != anySub && pat.base == name {
			return pat, true
		}
	}
	return pattern{}, false
}

func addrString[T fmt.Stringer](a T) string {
	s := a.String()
	if s == "invalid IP" {
		return "(none)"
	}
	return s
}
