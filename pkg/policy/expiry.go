package policy

import (
	"slices"
	"time"
)

// Expiring rules. A rule with expires (an RFC 3339 time in UTC) is in force
// strictly before that instant and never after it. A Policy is immutable, so
// it holds the rules in force at one instant (asOf); Expire returns the
// policy as of a later instant, compiled without the rules that expired in
// between, for the daemon to swap in (Decide never reads a clock, and stays
// allocation-free).

// RuleExpiry names a rule with an expiry.
type RuleExpiry struct {
	Rule    string
	File    string // the file the rule is in
	Line    int
	Expires time.Time
}

// parseExpires reads a rule's expires: RFC 3339, in UTC.
func parseExpires(c *errs, label string, v value) time.Time {
	if !v.set {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, v.s)
	if err != nil {
		c.add(v.line, "%s: expires %q is not an RFC 3339 time; write it in UTC, like 2026-12-24T06:00:00Z", label, v.s)
		return time.Time{}
	}
	if _, off := t.Zone(); off != 0 {
		c.add(v.line, "%s: expires %q is not in UTC; write it as %s", label, v.s, t.UTC().Format(time.RFC3339))
		return time.Time{}
	}
	return t.UTC()
}

// inForce reports whether the rule applies at now.
func (r *rule) inForce(now time.Time) bool {
	return r.expires.IsZero() || now.Before(r.expires)
}

// activate selects the rules in force at now and indexes them.
func (p *Policy) activate(now time.Time) {
	p.asOf = now
	p.rules = p.rules[:0:0]
	p.pos = make([]int32, len(p.all))
	for i := range p.all {
		p.pos[i] = -1
		if p.all[i].inForce(now) {
			p.pos[i] = int32(len(p.rules))
			p.rules = append(p.rules, p.all[i])
		}
	}
	p.index()
}

// AsOf returns the instant the policy's rules in force were chosen at.
func (p *Policy) AsOf() time.Time { return p.asOf }

// NextExpiry returns the earliest expiry among the rules in force, and
// false when none of them expires.
func (p *Policy) NextExpiry() (time.Time, bool) {
	var next time.Time
	for i := range p.rules {
		if e := p.rules[i].expires; !e.IsZero() && (next.IsZero() || e.Before(next)) {
			next = e
		}
	}
	return next, !next.IsZero()
}

// Expire returns the policy as of now: p itself when no rule in force has
// expired by then, otherwise a new Policy without the rules that have, and
// those rules. The file, its hash, the default and the tests stay.
func (p *Policy) Expire(now time.Time) (*Policy, []RuleExpiry) {
	if next, ok := p.NextExpiry(); !ok || now.Before(next) {
		return p, nil
	}
	var gone []RuleExpiry
	for i := range p.rules {
		if !p.rules[i].inForce(now) {
			gone = append(gone, p.rules[i].expiry(p.file))
		}
	}
	q := *p // the same file, hash, default and tests; activate rebuilds the rest
	q.activate(now)
	return &q, gone
}

// Expired returns the rules of the file that are not in force (they
// expired at or before AsOf), in file order.
func (p *Policy) Expired() []RuleExpiry {
	var out []RuleExpiry
	for i := range p.all {
		if p.pos[i] < 0 {
			out = append(out, p.all[i].expiry(p.file))
		}
	}
	return out
}

// Expiring returns the rules in force that expire within d of AsOf, soonest
// first.
func (p *Policy) Expiring(d time.Duration) []RuleExpiry {
	var out []RuleExpiry
	limit := p.asOf.Add(d)
	for i := range p.rules {
		if e := p.rules[i].expires; !e.IsZero() && !e.After(limit) {
			out = append(out, p.rules[i].expiry(p.file))
		}
	}
	sortExpiries(out)
	return out
}

func (r *rule) expiry(file string) RuleExpiry {
	if r.file != "" {
		file = r.file
	}
	return RuleExpiry{Rule: r.name, File: file, Line: r.line, Expires: r.expires}
}

func sortExpiries(l []RuleExpiry) {
	slices.SortStableFunc(l, func(a, b RuleExpiry) int { return a.Expires.Compare(b.Expires) })
}
