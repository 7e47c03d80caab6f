package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/defaults"
)

// Options are the parts of the daemon's config that change what a policy
// means. The zero value is design.md's defaults.
type Options struct {
	// InspectTCP and InspectUDP are the ports that carry a name
	// (inspect_ports). nil means the defaults, TCP 80 and 443 and UDP 443;
	// an empty non-nil slice means no port of that protocol carries one.
	InspectTCP, InspectUDP []uint16

	// At is the instant at which rules' expires are judged: a rule whose
	// expires is at or before it is not in force. The zero value is the
	// time of compiling.
	At time.Time

	// Sources resolves the workload selectors of rules' from (security
	// groups, tags). nil: selectors resolve to nothing, so they match no
	// source.
	Sources Sources
}

func (o Options) at() time.Time {
	if o.At.IsZero() {
		return time.Now()
	}
	return o.At
}

func (o Options) inspectTCP() []uint16 {
	if o.InspectTCP == nil {
		return defaults.InspectTCP
	}
	return o.InspectTCP
}

func (o Options) inspectUDP() []uint16 {
	if o.InspectUDP == nil {
		return defaults.InspectUDP
	}
	return o.InspectUDP
}

// Inspected reports whether flows of proto to port carry a name to read.
func (o Options) Inspected(proto Proto, port uint16) bool {
	switch proto {
	case TCP:
		return slices.Contains(o.inspectTCP(), port)
	case UDP:
		return slices.Contains(o.inspectUDP(), port)
	}
	return false
}

// Policy is a compiled, immutable policy. It is safe for concurrent use.
type Policy struct {
	file     string
	hash     string // hex SHA-256 of the file's bytes
	opts     Options
	def      Verdict
	defLine  int
	defFile  string   // in a directory, the file that sets the default
	files    []string // in a directory, its files' names, in merge order
	sources  Sources  // what resolved the rules' selectors; nil: nothing
	all      []rule   // every rule of the file, expired ones included, in file order
	pos      []int32  // for each rule of all, its index in rules, or -1 when it has expired
	asOf     time.Time
	rules    []rule // the rules in force at asOf: all without the expired ones
	tests    []testCase
	patterns int // domain entries in all rules
	prefixes int // cidrs entries in all rules

	// Indexes. Every rule is reachable from at least one of them: a rule
	// has domains, or cidrs, or both (compile refuses one with neither).
	names    map[string]*nameEntry // base name → rules with a pattern on it
	literal  map[string][]int32    // literal name (exact or ".x" base) → rules, for DNS matching
	cidrOnly *prefixTable[[]int32] // prefix → rules with cidrs and no domains
	named    []int32               // rules with domains, in file order
	byPort   map[portKey][]int32   // inspected proto/port → rules with domains that apply to it
	lits     []string              // every literal name, sorted (for the resolver)
	denyLits []string              // the literal names of deny rules, sorted
}

// nameEntry lists the rules a base name's patterns put in play.
type nameEntry struct {
	self  []int32 // match when the flow's name equals the base: exact and ".x"
	under []int32 // match when the flow's name is under the base: "*.x" and ".x"
}

type portKey struct {
	proto Proto
	port  uint16
}

// rule is a compiled rule.
type rule struct {
	name        string
	description string
	file        string // the file the rule is in, when the policy is a directory; "": the policy's file
	owner       string // its file's owner:, if any
	line        int
	action      Verdict
	from        prefixSet // with hasFrom false: every source
	fromStatic  []netip.Prefix
	selectors   []Selector // resolved into from by the policy's sources
	hasFrom     bool       // from was given: a source must be in from (which may be empty)
	domains     []pattern  // empty: the rule matches by address only
	cidrs       prefixSet  // empty: the rule matches by name only
	ports       []portRange
	proto       Proto
	shadow      bool      // a deny rule on trial: logged, never enforced
	expires     time.Time // the rule is in force before this instant; zero: always
}

// appliesTo checks the conditions that do not depend on the destination.
func (r *rule) appliesTo(src netip.Addr, port uint16, proto Proto) bool {
	if r.proto != ProtoAny && r.proto != proto {
		return false
	}
	if len(r.ports) > 0 && !inPorts(r.ports, port) {
		return false
	}
	return !r.hasFrom || r.from.contains(src)
}

func inPorts(rs []portRange, port uint16) bool {
	for _, pr := range rs {
		if pr.lo <= port && port <= pr.hi {
			return true
		}
	}
	return false
}

// Load reads, validates and compiles a policy file, or a directory of
// them (see DirFiles), and runs nothing else: the tests are run by
// RunTests. Every problem is reported, each with its file and line, as an
// ErrorList.
func Load(path string, opts Options) (*Policy, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return loadDir(path, opts)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read the policy: %v", err)}
	}
	return Parse(path, data, opts)
}

// Parse is Load on bytes already read; file names them in errors.
func Parse(file string, data []byte, opts Options) (*Policy, error) {
	spec, err := ParseSpec(file, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	p, err := Compile(file, spec, opts)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	p.hash = hex.EncodeToString(sum[:])
	return p, nil
}

var ruleNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Compile validates a Spec and builds the Policy. file names it in errors.
func Compile(file string, s *Spec, opts Options) (*Policy, error) {
	c := &errs{file: file}
	p := &Policy{
		file:    file,
		opts:    opts,
		defLine: s.defaultLine,
	}
	if s.Version.set && s.Version.s != "1" {
		c.add(s.Version.line, "version %q is not supported; this egressd reads version 1", s.Version.s)
	}
	if s.Default.set {
		v, ok := parseVerdict(s.Default.s)
		if !ok {
			c.file = orFile(s.defaultFile, file)
			c.add(s.Default.line, "default must be deny or allow, not %q", s.Default.s)
			c.file = file
		}
		p.def = v
	}
	if s.defaultFile != "" {
		p.defFile = s.defaultFile
	}
	type place struct {
		file string
		line int
	}
	seen := map[string]place{}
	for i := range s.Rules {
		rs := &s.Rules[i]
		c.file = orFile(rs.File, file)
		r := compileRule(c, rs, opts)
		r.file, r.owner = rs.File, rs.Owner
		if r.name != "" {
			if first, dup := seen[r.name]; dup {
				where := fmt.Sprintf("on line %d", first.line)
				if first.file != c.file {
					where = fmt.Sprintf("at %s:%d", first.file, first.line)
				}
				c.add(rs.Name.line, "rule %q: the name is already used by the rule %s; rule names must be unique", r.name, where)
			}
			seen[r.name] = place{c.file, rs.Name.line}
		}
		if opts.Sources != nil {
			r.resolveFrom(opts.Sources)
		}
		p.all = append(p.all, r)
	}
	p.sources = opts.Sources
	c.file = file
	if len(c.list) == 0 {
		p.activate(opts.at())
		p.tests = compileTests(c, s.Tests, p)
	}
	if len(c.list) > 0 {
		sortErrors(c.list)
		return nil, c.list
	}
	return p, nil
}

func compileRule(c *errs, rs *RuleSpec, opts Options) rule {
	r := rule{line: rs.Line, description: rs.Description.s}
	label := "a rule"
	switch {
	case !rs.Name.set:
		c.add(rs.Line, "a rule without a name; add \"name: ...\" (names appear in every decision it makes)")
	case !ruleNameRE.MatchString(rs.Name.s):
		c.add(rs.Name.line, "rule name %q: use letters, digits, '.', '_' and '-', at most 64, starting with a letter or digit", rs.Name.s)
	case rs.Name.s == DefaultRule:
		c.add(rs.Name.line, "rule name %q is reserved for decisions made by the policy's default", rs.Name.s)
	default:
		r.name = rs.Name.s
		label = fmt.Sprintf("rule %q", r.name)
	}

	switch {
	case !rs.Action.set:
		c.add(rs.Line, "%s has no action; add \"action: allow\" or \"action: deny\"", label)
	default:
		v, ok := parseVerdict(rs.Action.s)
		if !ok {
			c.add(rs.Action.line, "%s: action must be allow or deny, not %q", label, rs.Action.s)
		}
		r.action = v
	}

	if rs.Proto.set {
		pr, ok := ParseProto(rs.Proto.s)
		if !ok {
			c.add(rs.Proto.line, "%s: proto must be tcp, udp or any, not %q", label, rs.Proto.s)
		}
		r.proto = pr
	}

	for _, v := range rs.Ports {
		pr, err := parsePortRange(v.s)
		if err != nil {
			c.add(v.line, "%s: ports: %v", label, err)
			continue
		}
		r.ports = append(r.ports, pr)
	}

	r.fromStatic = parsePrefixes(c, label, "from", rs.From)
	r.selectors = compileSelectors(c, label, rs.FromSelectors)
	r.hasFrom = len(rs.From)+len(rs.FromSelectors) > 0
	r.from = newPrefixSet(r.fromStatic)
	r.cidrs = newPrefixSet(parsePrefixes(c, label, "cidrs", rs.CIDRs))

	r.expires = parseExpires(c, label, rs.Expires)
	allowPS := parseBool(c, label, "allow_public_suffix", rs.AllowPublicSuffix)
	r.shadow = parseBool(c, label, "shadow", rs.Shadow)
	if r.shadow && r.action != Deny {
		c.add(rs.Shadow.line, "%s: shadow applies to deny rules only (it logs what the rule would deny); remove it, or make the rule a deny", label)
	}
	seenDom := map[pattern]int{}
	for _, v := range rs.Domains {
		pat, err := parsePattern(v.s)
		if err != nil {
			c.add(v.line, "%s: %v", label, err)
			continue
		}
		if first, dup := seenDom[pat]; dup {
			c.add(v.line, "%s: domain %q is listed twice (first on line %d)", label, v.s, first)
			continue
		}
		seenDom[pat] = v.line
		// Only an allow rule can let anyone out; a deny rule over a whole
		// public suffix (".ngrok.io") is exactly what it says.
		if r.action == Allow && !allowPS && coversPublicSuffix(pat) {
			c.add(v.line, "%s: domain %q covers the whole public suffix %q, so anyone who registers a name under it gets through; name the domains you mean, or set \"allow_public_suffix: true\" on the rule if this is intended", label, v.s, pat.base)
		}
		if r.action == Allow {
			if n := coversECHPublicName(pat); n != "" {
				c.add(v.line, "%s: domain %q allows %q, the public name of an Encrypted Client Hello provider: every site behind it would get through; allow the sites' own names instead", label, v.s, n)
			}
		}
		r.domains = append(r.domains, pat)
	}

	if len(rs.Domains) == 0 && len(rs.CIDRs) == 0 && (rs.Name.set || rs.Action.set) {
		c.add(rs.Line, "%s matches nothing: give it domains, cidrs or both (for every destination, cidrs: [0.0.0.0/0])", label)
	}

	// A rule whose explicit ports all carry no name can match its domains
	// only by DNS address, and a "*." entry has no address to resolve.
	if len(r.domains) > 0 && len(r.ports) > 0 && !anyNamedPort(r, opts) && allWildcards(r.domains) {
		c.add(rs.Line, "%s: its ports (%s) carry no name, so its domains can only match by the addresses they resolve to, and \"*.\" wildcards resolve to none; list literal names (\"example.com\" or \".example.com\") or add cidrs", label, portsString(r.ports))
	}
	return r
}

func parseBool(c *errs, label, field string, v value) bool {
	if !v.set {
		return false
	}
	b, err := strconv.ParseBool(v.s)
	if err != nil {
		c.add(v.line, "%s: %s must be true or false, not %q", label, field, v.s)
	}
	return b
}

func anyNamedPort(r rule, opts Options) bool {
	for _, pr := range r.ports {
		for _, proto := range []Proto{TCP, UDP} {
			if r.proto != ProtoAny && r.proto != proto {
				continue
			}
			ports := opts.inspectTCP()
			if proto == UDP {
				ports = opts.inspectUDP()
			}
			for _, p := range ports {
				if pr.lo <= p && p <= pr.hi {
					return true
				}
			}
		}
	}
	return false
}

func allWildcards(ps []pattern) bool {
	for _, p := range ps {
		if p.kind != anySub {
			return false
		}
	}
	return true
}

func portsString(rs []portRange) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ", ")
}

// parsePortRange reads "443" or "8000-8100".
func parsePortRange(s string) (portRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	l, err := parsePort(strings.TrimSpace(lo))
	if err != nil {
		return portRange{}, err
	}
	if !isRange {
		return portRange{l, l}, nil
	}
	h, err := parsePort(strings.TrimSpace(hi))
	if err != nil {
		return portRange{}, err
	}
	if h < l {
		return portRange{}, fmt.Errorf("range %q runs backwards; write it low-high", s)
	}
	return portRange{l, h}, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a port number (1-65535, or a range like 8000-8100)", s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %d is outside 1-65535", n)
	}
	return uint16(n), nil
}

// parsePrefixes reads CIDRs; a bare address stands for itself (/32, /128).
func parsePrefixes(c *errs, label, field string, vs []value) []netip.Prefix {
	var out []netip.Prefix
	seen := map[netip.Prefix]int{}
	for _, v := range vs {
		p, err := parsePrefix(v.s)
		if err != nil {
			c.add(v.line, "%s: %s: %v", label, field, err)
			continue
		}
		if first, dup := seen[p]; dup {
			c.add(v.line, "%s: %s: %s is listed twice (first on line %d)", label, field, p, first)
			continue
		}
		seen[p] = v.line
		out = append(out, p)
	}
	return out
}

func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR (like 10.0.1.0/24)", s)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q has a zone; zones are not allowed", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (like 10.0.1.0/24)", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix; write the IPv4 form", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has bits set past the prefix length; did you mean %s?", s, m)
	}
	return p, nil
}

// index builds the lookup structures from the rules in force.
func (p *Policy) index() {
	p.names = map[string]*nameEntry{}
	p.literal = map[string][]int32{}
	p.cidrOnly = newPrefixTable[[]int32]()
	p.byPort = map[portKey][]int32{}
	p.named, p.lits, p.denyLits = nil, nil, nil
	p.patterns, p.prefixes = 0, 0
	add := func(list []int32, i int32) []int32 {
		if n := len(list); n > 0 && list[n-1] == i {
			return list
		}
		return append(list, i)
	}
	lits := map[string]bool{}
	for i := range p.rules {
		r := &p.rules[i]
		idx := int32(i)
		p.patterns += len(r.domains)
		p.prefixes += len(r.cidrs.list)
		if len(r.domains) == 0 {
			for _, pf := range r.cidrs.list {
				p.cidrOnly.update(pf, func(l []int32) []int32 { return add(l, idx) })
			}
			continue
		}
		p.named = append(p.named, idx)
		for _, pat := range r.domains {
			e := p.names[pat.base]
			if e == nil {
				e = &nameEntry{}
				p.names[pat.base] = e
			}
			switch pat.kind {
			case exact:
				e.self = add(e.self, idx)
			case anySub:
				e.under = add(e.under, idx)
			case apexAndSub:
				e.self = add(e.self, idx)
				e.under = add(e.under, idx)
			}
			if pat.kind != anySub {
				p.literal[pat.base] = add(p.literal[pat.base], idx)
				lits[pat.base] = true
			}
		}
	}
	// Rules are visited in file order, so every list is already sorted;
	// a name listed under several patterns of one rule appears once.
	for _, e := range p.names {
		e.self = slices.Compact(e.self)
		e.under = slices.Compact(e.under)
	}
	for proto, ports := range map[Proto][]uint16{TCP: p.opts.inspectTCP(), UDP: p.opts.inspectUDP()} {
		for _, port := range ports {
			k := portKey{proto, port}
			p.byPort[k] = []int32{}
			for _, i := range p.named {
				r := &p.rules[i]
				if (r.proto == ProtoAny || r.proto == proto) && (len(r.ports) == 0 || inPorts(r.ports, port)) {
					p.byPort[k] = append(p.byPort[k], i)
				}
			}
		}
	}
	p.lits = make([]string, 0, len(lits))
	for n := range lits {
		p.lits = append(p.lits, n)
		for _, i := range p.literal[n] {
			if p.rules[i].action == Deny {
				p.denyLits = append(p.denyLits, n)
				break
			}
		}
	}
	slices.Sort(p.lits)
	slices.Sort(p.denyLits)
}

// File returns the name the policy was loaded from.
func (p *Policy) File() string { return p.file }

// Hash returns the hex SHA-256 of the policy file's bytes, or of a policy
// directory's manifest (see DirFiles); "" for a policy compiled from a
// Spec without Parse.
func (p *Policy) Hash() string { return p.hash }

// Default returns the verdict for flows no rule matches.
func (p *Policy) Default() Verdict { return p.def }

// Stats counts a policy's parts, for check's summary and for metrics.
// Rules, Domains and CIDRs count the rules in force; Expired the rules of
// the file that are not.
type Stats struct {
	Rules, Domains, CIDRs, Tests, Expired int
}

// Stats returns the policy's counts.
func (p *Policy) Stats() Stats {
	return Stats{Rules: len(p.rules), Domains: p.patterns, CIDRs: p.prefixes, Tests: len(p.tests), Expired: len(p.all) - len(p.rules)}
}

// Options returns the options the policy was compiled with.
func (p *Policy) Options() Options { return p.opts }

// LiteralNames returns the names the policy's rules spell out in full
// ("example.com" and the apex of ".example.com", not "*." entries), sorted.
// These are the names to resolve ahead of need for ports without a name.
// The slice must not be modified.
func (p *Policy) LiteralNames() []string { return p.lits }

// DenyLiteralNames returns the literal names of deny rules (shadow ones
// included), sorted: the names through whose DNS answers deny rules meet a
// flow on a port that carries a name. The slice must not be modified.
func (p *Policy) DenyLiteralNames() []string { return p.denyLits }

// orFile is f, or the policy's file when f is "".
func orFile(f, policyFile string) string {
	if f == "" {
		return policyFile
	}
	return f
}
