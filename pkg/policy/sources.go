package policy

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Workload sources. An entry of a rule's from may select workloads instead
// of naming addresses:
//
//	from:
//	  - 10.0.1.0/24
//	  - security_groups: [sg-0123456789abcdef0]   # interfaces in any of these groups
//	  - tags: {Team: payments}                    # interfaces with all of these tags
//
// (both keys in one entry: interfaces that satisfy both). The daemon
// resolves each selector to the private addresses of the network
// interfaces it selects (EC2 DescribeNetworkInterfaces) and compiles them
// into the rule's from, so Decide sees prefixes as ever. A selector that
// resolves to nothing matches nothing (never every source), and check and
// the log say so.

// Selector selects network interfaces by security group and tags.
type Selector struct {
	SecurityGroups []string // any of them; sorted
	Tags           []Tag    // all of them; sorted by key
}

// Tag is one tag a selector requires.
type Tag struct{ Key, Value string }

// String is the selector as written in a policy, canonical: the key
// sources are cached by.
func (s Selector) String() string {
	var parts []string
	if len(s.SecurityGroups) > 0 {
		parts = append(parts, "security_groups: ["+strings.Join(s.SecurityGroups, ", ")+"]")
	}
	if len(s.Tags) > 0 {
		var ts []string
		for _, t := range s.Tags {
			ts = append(ts, fmt.Sprintf("%s: %s", t.Key, t.Value))
		}
		parts = append(parts, "tags: {"+strings.Join(ts, ", ")+"}")
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// Sources resolves selectors (the daemon's cache of EC2's answers).
type Sources interface {
	// Addresses returns the private addresses of the interfaces sel
	// selects, and whether sel has been resolved at all.
	Addresses(sel Selector) ([]netip.Addr, bool)
}

// SelectorSpec is a from entry that selects workloads, as written.
type SelectorSpec struct {
	Line           int
	SecurityGroups []value
	Tags           []TagSpec
}

// TagSpec is one tag of a selector, as written.
type TagSpec struct {
	Key, Value value
}

var sgRE = regexp.MustCompile(`^sg-[0-9a-f]{8}([0-9a-f]{9})?$`)

// parseFrom reads a rule's from: addresses and CIDRs, and selectors.
func parseFrom(c *errs, n *yaml.Node) ([]value, []SelectorSpec) {
	var addrs []value
	var sels []SelectorSpec
	items := sequence(c, n, "from")
	if n.Kind == yaml.SequenceNode && len(n.Content) == 0 {
		c.add(n.Line, "\"from\" is an empty list; leave the key out or give it entries")
	}
	for _, it := range items {
		if it.Kind != yaml.MappingNode {
			if v := scalar(c, it, "from entry"); v.set {
				addrs = append(addrs, v)
			}
			continue
		}
		s := SelectorSpec{Line: it.Line}
		mapping(c, it, "a from selector", []string{"security_groups", "tags"}, func(key string, k, v *yaml.Node) {
			switch key {
			case "security_groups":
				s.SecurityGroups = scalars(c, v, key)
			case "tags":
				if v.Kind != yaml.MappingNode || len(v.Content) == 0 {
					c.add(v.Line, "\"tags\" must be a mapping of tag keys to values, like tags: {Team: payments}")
				}
			}
		})
		if tags := mapValue(it, "tags"); tags != nil && tags.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(tags.Content); i += 2 {
				k := scalar(c, tags.Content[i], "tag key")
				val := scalar(c, resolveAlias(tags.Content[i+1]), "tag value")
				if k.set && val.set {
					s.Tags = append(s.Tags, TagSpec{k, val})
				}
			}
		}
		if len(s.SecurityGroups) == 0 && len(s.Tags) == 0 && len(it.Content) == 0 {
			c.add(it.Line, "an empty from selector; give it security_groups: [sg-...] or tags: {Key: value}")
		}
		sels = append(sels, s)
	}
	return addrs, sels
}

// mapValue is the value of key in a mapping node, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return resolveAlias(n.Content[i+1])
		}
	}
	return nil
}

// compileSelectors validates a rule's selectors.
func compileSelectors(c *errs, label string, specs []SelectorSpec) []Selector {
	var out []Selector
	seen := map[string]int{}
	for _, ss := range specs {
		var s Selector
		ok := len(ss.SecurityGroups)+len(ss.Tags) > 0
		for _, g := range ss.SecurityGroups {
			if !sgRE.MatchString(g.s) {
				c.add(g.line, "%s: from: %q is not a security group id (sg- and 8 or 17 hex digits)", label, g.s)
				ok = false
				continue
			}
			s.SecurityGroups = append(s.SecurityGroups, g.s)
		}
		keys := map[string]bool{}
		for _, t := range ss.Tags {
			switch {
			case t.Key.s == "" || len(t.Key.s) > 128:
				c.add(t.Key.line, "%s: from: tag key %q must be 1 to 128 characters", label, t.Key.s)
				ok = false
			case len(t.Value.s) > 256:
				c.add(t.Value.line, "%s: from: the value of tag %q is longer than 256 characters", label, t.Key.s)
				ok = false
			case keys[t.Key.s]:
				c.add(t.Key.line, "%s: from: tag %q is listed twice", label, t.Key.s)
				ok = false
			}
			keys[t.Key.s] = true
			s.Tags = append(s.Tags, Tag{t.Key.s, t.Value.s})
		}
		if !ok {
			continue
		}
		slices.Sort(s.SecurityGroups)
		s.SecurityGroups = slices.Compact(s.SecurityGroups)
		slices.SortFunc(s.Tags, func(a, b Tag) int { return strings.Compare(a.Key, b.Key) })
		if first, dup := seen[s.String()]; dup {
			c.add(ss.Line, "%s: from: the selector %s is listed twice (first on line %d)", label, s, first)
			continue
		}
		seen[s.String()] = ss.Line
		out = append(out, s)
	}
	return out
}

// SelectorUse is a selector of a rule in force, and what it resolves to.
type SelectorUse struct {
	Rule     string
	File     string
	Line     int
	Selector Selector
	Resolved bool // the sources have an answer for it
	Count    int  // the addresses it resolves to
}

// Selectors returns the distinct selectors of the rules in force, sorted:
// what the daemon resolves.
func (p *Policy) Selectors() []Selector {
	seen := map[string]Selector{}
	for i := range p.all {
		for _, s := range p.all[i].selectors {
			seen[s.String()] = s
		}
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]Selector, len(keys))
	for i, k := range keys {
		out[i] = seen[k]
	}
	return out
}

// SelectorUses returns each selector of each rule in force with what the
// policy's sources resolved it to.
func (p *Policy) SelectorUses() []SelectorUse {
	var out []SelectorUse
	for i := range p.rules {
		r := &p.rules[i]
		for _, s := range r.selectors {
			u := SelectorUse{Rule: r.name, File: orFile(r.file, p.file), Line: r.line, Selector: s}
			if p.sources != nil {
				addrs, ok := p.sources.Addresses(s)
				u.Resolved, u.Count = ok, len(addrs)
			}
			out = append(out, u)
		}
	}
	return out
}

// WithSources returns the policy with its selectors resolved by src:
// each rule's from is its addresses and CIDRs and its selectors' addresses.
// A policy without selectors is returned as it is.
func (p *Policy) WithSources(src Sources) *Policy {
	if len(p.Selectors()) == 0 {
		return p
	}
	q := *p
	q.sources = src
	q.all = make([]rule, len(p.all))
	copy(q.all, p.all)
	for i := range q.all {
		q.all[i].resolveFrom(src)
	}
	q.activate(p.asOf)
	return &q
}

// resolveFrom builds the rule's from set from its prefixes and what its
// selectors resolve to.
func (r *rule) resolveFrom(src Sources) {
	if len(r.selectors) == 0 {
		return
	}
	list := slices.Clone(r.fromStatic)
	seen := map[netip.Prefix]bool{}
	for _, p := range list {
		seen[p] = true
	}
	if src != nil {
		for _, s := range r.selectors {
			addrs, _ := src.Addresses(s)
			for _, a := range addrs {
				a = a.Unmap()
				pf := netip.PrefixFrom(a, a.BitLen())
				if !seen[pf] {
					seen[pf] = true
					list = append(list, pf)
				}
			}
		}
	}
	r.from = newPrefixSet(list)
}
