package suggest

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/publicsuffix"

	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

// Options shape the proposal. The zero value groups sources by /24 (/64),
// needs three siblings for a suffix, and takes design.md's inspect ports.
type Options struct {
	// Subnets are the source subnets to group by (the VPC's). A source
	// in none of them is grouped by its own /GroupBits.
	Subnets []netip.Prefix
	// GroupBits is the prefix length of a source's group when it is in
	// no Subnet: 0 means 24 (IPv4); IPv6 sources always use /64.
	GroupBits int
	// MinSiblings is how many distinct observed names under one parent
	// justify ".parent"; 0 means 3. A negative value never generalises.
	MinSiblings int
	// Inspect says which ports carry a name (the daemon's inspect_ports).
	Inspect policy.Options
}

func (o Options) groupBits() int {
	if o.GroupBits == 0 {
		return 24
	}
	return o.GroupBits
}

func (o Options) minSiblings() int {
	if o.MinSiblings == 0 {
		return 3
	}
	return o.MinSiblings
}

// seen counts flows: how many, from how many sources, when.
type seen struct {
	flows       int
	srcs        map[netip.Addr]struct{}
	first, last time.Time
}

func (s *seen) add(src netip.Addr, t time.Time) {
	if s.srcs == nil {
		s.srcs = map[netip.Addr]struct{}{}
	}
	s.flows++
	s.srcs[src] = struct{}{}
	if s.first.IsZero() || t.Before(s.first) {
		s.first = t
	}
	if t.After(s.last) {
		s.last = t
	}
}

func (s *seen) merge(o *seen) {
	for a := range o.srcs {
		if s.srcs == nil {
			s.srcs = map[netip.Addr]struct{}{}
		}
		s.srcs[a] = struct{}{}
	}
	s.flows += o.flows
	if s.first.IsZero() || (!o.first.IsZero() && o.first.Before(s.first)) {
		s.first = o.first
	}
	if o.last.After(s.last) {
		s.last = o.last
	}
}

// nameSeen is one observed name in a group.
type nameSeen struct {
	seen
	ports map[uint16]struct{}
	byDNS bool // seen on a port that carries no name: only its own DNS answers match it
	src   netip.Addr
	port  uint16
	proto policy.Proto
}

// group is one source subnet's observations.
type group struct {
	prefix netip.Prefix
	names  map[nameKey]*nameSeen
}

// nameKey tells a name seen where it was read apart from the same name
// matched by DNS on a port without one: only the first may be folded.
type nameKey struct {
	name  string
	byDNS bool
}

// Unnamed is a destination observed without a name the proposal can use,
// for a person to decide.
type Unnamed struct {
	Group netip.Prefix
	Dst   netip.Addr
	Port  uint16
	Proto policy.Proto
	Name  string // the "name" when it was an IP address or is not a valid name
	Why   string // no name, an IP address, not verified at the destination, ...
	seen
}

// Builder collects decision records.
type Builder struct {
	opts    Options
	groups  map[netip.Prefix]*group
	unnamed map[unnamedKey]*Unnamed
	lines   int
	skipped map[string]int // records not used, by why
	span    seen
}

type unnamedKey struct {
	group netip.Prefix
	dst   netip.Addr
	port  uint16
	proto policy.Proto
	name  string
}

// NewBuilder returns an empty Builder.
func NewBuilder(o Options) *Builder {
	return &Builder{opts: o, groups: map[netip.Prefix]*group{}, unnamed: map[unnamedKey]*Unnamed{}, skipped: map[string]int{}}
}

// groupOf is the source group of addr.
func (b *Builder) groupOf(addr netip.Addr) netip.Prefix {
	for _, p := range b.opts.Subnets {
		if p.Contains(addr) {
			return p.Masked()
		}
	}
	bits := b.opts.groupBits()
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(min(bits, addr.BitLen()))
	return p
}

// Add takes one decision record (a line of the log, or of replay's
// output). Records of flows that got no decision are ignored.
func (b *Builder) Add(r *declog.Record) {
	if r.Undecided || !r.Src.IsValid() || !r.Dst.IsValid() || r.DstPort == 0 {
		return
	}
	b.lines++
	b.span.add(r.Src, r.Time)
	why := ""
	switch {
	case r.Verdict == policy.Deny && (r.Reason == policy.ReasonIncomplete || r.Reason == policy.ReasonMalformed ||
		r.Reason == policy.ReasonLimit):
		b.skipped[r.Reason.String()]++ // the flow head failed: nothing to allow
		return
	case r.Verdict == policy.Deny && r.Reason == policy.ReasonNotTLSOrHTTP:
		why = "neither TLS nor HTTP on a port that carries a name"
	case r.Verdict == policy.Deny && (r.Reason == policy.ReasonDNSMismatch || r.Reason == policy.ReasonDNSError):
		why = "the name was not verified at the destination (" + r.Reason.String() + ")"
	case r.Name == "" || r.NameFrom == declog.FromNone:
		why = "no name"
	}
	name := r.Name
	if why == "" {
		if _, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
			why = "an IP address, not a name"
		} else if n, err := policy.NormalizeName(name); err != nil {
			why = "not a valid name: " + err.Error()
		} else {
			name = n
		}
	}
	gp := b.groupOf(r.Src)
	if why != "" {
		k := unnamedKey{gp, r.Dst, r.DstPort, r.Proto, r.Name}
		u := b.unnamed[k]
		if u == nil {
			u = &Unnamed{Group: gp, Dst: r.Dst, Port: r.DstPort, Proto: r.Proto, Name: r.Name, Why: why}
			b.unnamed[k] = u
		}
		u.add(r.Src, r.Time)
		return
	}
	g := b.groups[gp]
	if g == nil {
		g = &group{prefix: gp, names: map[nameKey]*nameSeen{}}
		b.groups[gp] = g
	}
	k := nameKey{name, r.NameFrom == declog.FromDNS || !b.opts.Inspect.Inspected(r.Proto, r.DstPort)}
	ns := g.names[k]
	if ns == nil {
		ns = &nameSeen{ports: map[uint16]struct{}{}, byDNS: k.byDNS, src: r.Src, port: r.DstPort, proto: r.Proto}
		g.names[k] = ns
	}
	ns.add(r.Src, r.Time)
	ns.ports[r.DstPort] = struct{}{}
}

// Entry is one domain of a proposed rule.
type Entry struct {
	Domain  string   // "name" or ".parent"
	Covers  []string // for ".parent": the observed names it stands for
	Flows   int
	Sources int
	First   time.Time
	Last    time.Time
}

// Rule is one proposed rule.
type Rule struct {
	Name    string
	From    netip.Prefix
	Ports   []uint16
	Entries []Entry
	// A flow the rule must allow, for its test.
	TestSrc  netip.Addr
	TestName string
	TestPort uint16
	TestUDP  bool
}

// Suggestion is the proposal.
type Suggestion struct {
	Rules   []Rule
	Unnamed []Unnamed // sorted by group, flows (most first), destination
	Lines   int
	Skipped map[string]int
	First   time.Time
	Last    time.Time
}

// Result builds the proposal from what was added.
func (b *Builder) Result() *Suggestion {
	s := &Suggestion{Lines: b.lines, Skipped: b.skipped, First: b.span.first, Last: b.span.last}
	groups := make([]*group, 0, len(b.groups))
	for _, g := range b.groups {
		groups = append(groups, g)
	}
	slices.SortFunc(groups, func(x, y *group) int { return comparePrefix(x.prefix, y.prefix) })
	used := map[string]bool{}
	for _, g := range groups {
		for _, r := range b.rulesOf(g) {
			r.Name = uniqueName(used, r.Name)
			s.Rules = append(s.Rules, r)
		}
	}
	for _, u := range b.unnamed {
		s.Unnamed = append(s.Unnamed, *u)
	}
	slices.SortFunc(s.Unnamed, func(x, y Unnamed) int {
		return cmp.Or(comparePrefix(x.Group, y.Group), cmp.Compare(y.flows, x.flows), x.Dst.Compare(y.Dst),
			cmp.Compare(x.Port, y.Port), cmp.Compare(x.Proto, y.Proto), cmp.Compare(x.Name, y.Name))
	})
	return s
}

func comparePrefix(x, y netip.Prefix) int {
	return cmp.Or(x.Addr().Compare(y.Addr()), cmp.Compare(x.Bits(), y.Bits()))
}

// pattern is an entry while the siblings are folded: a base name, exact or
// with its subdomains (".base").
type pattern struct {
	base   string
	suffix bool
	covers []string
	seen   seen
	ports  map[uint16]struct{}
	fixed  bool // byDNS: never folded into a parent
	// first is the most seen name the pattern stands for (firstName), for
	// the rule's test.
	first     *nameSeen
	firstName string
}

// rulesOf folds a group's names and splits them into rules by port set.
func (b *Builder) rulesOf(g *group) []Rule {
	pats := map[string]*pattern{}
	for k, ns := range g.names {
		key := k.name
		if k.byDNS {
			key += " (dns)"
		}
		pats[key] = &pattern{base: k.name, covers: []string{k.name}, seen: ns.seen, ports: ns.ports, fixed: ns.byDNS, first: ns, firstName: k.name}
	}
	if n := b.opts.minSiblings(); n > 0 {
		foldSiblings(pats, n)
	}
	// One rule per set of ports, in the order of the ports.
	byPorts := map[string][]*pattern{}
	for _, p := range pats {
		k := portsKey(p.ports)
		byPorts[k] = append(byPorts[k], p)
	}
	var out []Rule
	for _, k := range sortedKeys(byPorts) {
		list := byPorts[k]
		slices.SortFunc(list, func(x, y *pattern) int { return cmp.Compare(reversed(x.base), reversed(y.base)) })
		r := Rule{From: g.prefix, Ports: sortedPorts(list[0].ports)}
		r.Name = fmt.Sprintf("observed-%s-%s", strings.ReplaceAll(g.prefix.String(), "/", "_"), strings.ReplaceAll(k, ",", "."))
		r.Name = strings.ReplaceAll(r.Name, ":", ".")
		for _, p := range list {
			e := Entry{Domain: p.base, Flows: p.seen.flows, Sources: len(p.seen.srcs), First: p.seen.first, Last: p.seen.last}
			if p.suffix {
				e.Domain, e.Covers = "."+p.base, p.covers
			}
			r.Entries = append(r.Entries, e)
		}
		// The test: the rule's most seen name, as first seen.
		best := list[0]
		for _, p := range list {
			if p.first.flows > best.first.flows {
				best = p
			}
		}
		ns := best.first
		r.TestSrc, r.TestName, r.TestPort, r.TestUDP = ns.src, best.firstName, ns.port, ns.proto == policy.UDP
		out = append(out, r)
	}
	return out
}

// foldSiblings replaces, until nothing changes, every minSib or more
// patterns with the same parent by ".parent" (with whatever else lies
// under it), where the parent may be allowed as a suffix. The map's keys
// only tell the patterns apart.
func foldSiblings(pats map[string]*pattern, minSib int) {
	for {
		children := map[string][]string{}
		for _, p := range pats {
			if p.fixed {
				continue
			}
			if parent, ok := parentOf(p.base); ok {
				children[parent] = append(children[parent], p.base)
			}
		}
		folded := false
		for _, parent := range sortedKeys(children) {
			if len(children[parent]) < minSib || !suffixAllowed(parent, children[parent]) {
				continue
			}
			np := &pattern{base: parent, suffix: true, ports: map[uint16]struct{}{}}
			for key, p := range pats {
				if p.fixed || (p.base != parent && !strings.HasSuffix(p.base, "."+parent)) {
					continue // a name seen on a port without a name stays exact beside the suffix
				}
				np.covers = append(np.covers, p.covers...)
				np.seen.merge(&p.seen)
				if np.first == nil || p.first.flows > np.first.flows || (p.first.flows == np.first.flows && p.firstName < np.firstName) {
					np.first, np.firstName = p.first, p.firstName
				}
				for port := range p.ports {
					np.ports[port] = struct{}{}
				}
				delete(pats, key)
			}
			slices.Sort(np.covers)
			pats["."+parent] = np
			folded = true
			break // the map changed: count again
		}
		if !folded {
			return
		}
	}
}

// parentOf is the name without its first label, if it has two or more.
func parentOf(name string) (string, bool) {
	_, parent, ok := strings.Cut(name, ".")
	return parent, ok && strings.Contains(parent, ".")
}

// suffixAllowed reports whether ".parent" may be proposed: the parent is
// not a public suffix, no public suffix lies below it (neither a wildcard
// rule, nor one of the observed names' own suffixes, nor a name known to
// hold public suffixes of its own), so anyone able to get a name under it
// is its owner.
func suffixAllowed(parent string, names []string) bool {
	ps, _ := publicsuffix.PublicSuffix(parent)
	if ps == parent {
		return false
	}
	if probe, _ := publicsuffix.PublicSuffix("egressd-probe." + parent); probe != ps {
		return false // a wildcard rule: "*.parent" are all public suffixes
	}
	for _, n := range names {
		if s, _ := publicsuffix.PublicSuffix(n); s != ps {
			return false
		}
	}
	reg, err := publicsuffix.EffectiveTLDPlusOne(parent)
	if err != nil {
		return false
	}
	return !slices.Contains(suffixHosts, reg)
}

// suffixHosts are registrable domains that hold public suffixes below them
// which the probes above cannot see (the list's entries under them are
// not wildcards, and may be unobserved): "s3.amazonaws.com" under
// amazonaws.com, "blob.core.windows.net" under windows.net,
// "lambda-url.us-east-1.on.aws" under on.aws. A test holds each to the
// list.
var suffixHosts = []string{"amazonaws.com", "windows.net", "on.aws"}

func portsKey(ports map[uint16]struct{}) string {
	s := make([]string, 0, len(ports))
	for _, p := range sortedPorts(ports) {
		s = append(s, fmt.Sprint(p))
	}
	return strings.Join(s, ",")
}

func sortedPorts(ports map[uint16]struct{}) []uint16 {
	out := make([]uint16, 0, len(ports))
	for p := range ports {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// reversed orders names by their labels from the right, so that siblings
// sit together.
func reversed(name string) string {
	labels := strings.Split(name, ".")
	slices.Reverse(labels)
	return strings.Join(labels, ".")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// uniqueName is name, or name with a number, not yet in used.
func uniqueName(used map[string]bool, name string) string {
	if len(name) > 60 {
		name = name[:60]
	}
	n := name
	for i := 2; used[n]; i++ {
		n = fmt.Sprintf("%s-%d", name, i)
	}
	used[n] = true
	return n
}
