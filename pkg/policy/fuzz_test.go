package policy

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the loader: it must return a policy
// or an error list with line numbers, never panic; a policy it returns
// must decide and run its tests without panicking.
func FuzzParse(f *testing.F) {
	// Seeds: the example policy (every feature), and every bad policy
	// (every error path).
	seeds, _ := filepath.Glob("testdata/bad/*.yaml")
	seeds = append(seeds, "../../examples/policy.yaml")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("version: 1\ndefault: allow\nrules:\n  - {name: a, cidrs: [::/0], action: deny}\n"))                                                                   // IPv6 everything
	f.Add([]byte("version: 1\ndefault: deny\nrules: &r [*r]\n"))                                                                                                        // a self-referencing alias
	f.Add([]byte("version: 1\ndefault: deny\nrules:\n  - {name: w, from: [{tags: {Team: a}}, {security_groups: [sg-01234567]}], cidrs: [0.0.0.0/0], action: allow}\n")) // workload selectors
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("f.yaml", data, Options{})
		if err != nil {
			for _, e := range AsList(err) {
				if e.Msg == "" {
					t.Fatalf("an error without a message: %#v", e)
				}
			}
			return
		}
		p.RunTests()
		for _, q := range []Query{
			tlsQuery("example.com"),
			{Src: client, Dst: server, Port: 22, Proto: TCP, DNSNames: p.LiteralNames()},
			{Src: client, Dst: netip.MustParseAddr("2001:db8::1"), Port: 443, Proto: UDP, Inspected: true, Pending: true},
		} {
			d := p.Decide(q)
			if e := p.Explain(q); e.Decision != d {
				t.Fatalf("Decide %+v != Explain %+v for %s", d, e.Decision, describe(&q))
			}
		}
	})
}

// genPolicy builds a small policy and a query from fuzz bytes, over pools of
// names and addresses chosen to collide: subdomains, apexes, lookalikes.
type gen struct{ b []byte }

func (g *gen) next() int {
	if len(g.b) == 0 {
		return 0
	}
	v := int(g.b[0])
	g.b = g.b[1:]
	return v
}

func (g *gen) pick(list []string) string { return list[g.next()%len(list)] }

var (
	fuzzNames  = []string{"example.com", "a.example.com", "b.a.example.com", "badexample.com", "example.org", "x.example.org", "com", "org"}
	fuzzCIDRs  = []string{"203.0.113.0/24", "203.0.113.10/32", "198.51.100.0/24", "0.0.0.0/0", "10.0.0.0/8", "2001:db8::/32"}
	fuzzAddrs  = []string{"203.0.113.10", "203.0.113.11", "198.51.100.1", "10.0.1.7", "10.0.9.9", "2001:db8::1", "192.0.2.1"}
	fuzzPorts  = []string{"22", "80", "443", "8000-9000"}
	fuzzProtos = []string{"tcp", "udp", "any"}
)

// policy returns a generated policy, and the same policy without its
// shadow rules (what must be enforced).
func (g *gen) policy() (text, enforced string) {
	var all, real strings.Builder
	head := fmt.Sprintf("version: 1\ndefault: %s\nrules:\n", []string{"deny", "allow"}[g.next()%2])
	all.WriteString(head)
	real.WriteString(head)
	n := 1 + g.next()%6
	for i := 0; i < n; i++ {
		var b strings.Builder
		action := []string{"deny", "allow"}[g.next()%2]
		fmt.Fprintf(&b, "  - name: r%d\n    allow_public_suffix: true\n    action: %s\n", i, action)
		flags := g.next()
		if flags&1 != 0 || flags&2 == 0 {
			doms := map[string]bool{}
			for k := 0; k <= g.next()%3; k++ {
				doms[[]string{"", "*.", "."}[g.next()%3]+g.pick(fuzzNames)] = true
			}
			b.WriteString("    domains: [")
			sep := ""
			for d := range doms {
				fmt.Fprintf(&b, "%s%q", sep, d)
				sep = ", "
			}
			b.WriteString("]\n")
		}
		if flags&2 != 0 {
			fmt.Fprintf(&b, "    cidrs: [%s]\n", g.pick(fuzzCIDRs))
		}
		if flags&4 != 0 {
			fmt.Fprintf(&b, "    from: [%s]\n", g.pick([]string{"10.0.1.0/24", "10.0.0.0/8", "2001:db8::/32", "{security_groups: [sg-01234567]}"}))
		}
		if flags&8 != 0 {
			fmt.Fprintf(&b, "    ports: [%s]\n", g.pick(fuzzPorts))
		}
		if flags&16 != 0 {
			fmt.Fprintf(&b, "    proto: %s\n", g.pick(fuzzProtos))
		}
		shadow := action == "deny" && flags&32 != 0
		if shadow {
			b.WriteString("    shadow: true\n")
		}
		all.WriteString(b.String())
		if !shadow {
			real.WriteString(b.String())
		}
	}
	return all.String(), real.String()
}

func (g *gen) query(p *Policy) Query {
	q := Query{
		Src:   netip.MustParseAddr(g.pick(fuzzAddrs)),
		Dst:   netip.MustParseAddr(g.pick(fuzzAddrs)),
		Port:  []uint16{22, 80, 443, 8443, 8500}[g.next()%5],
		Proto: []Proto{TCP, UDP}[g.next()%2],
	}
	q.Inspected = p.opts.Inspected(q.Proto, q.Port)
	switch mode := g.next() % 4; {
	case !q.Inspected:
		for _, n := range p.LiteralNames() {
			if g.next()%2 == 0 {
				q.DNSNames = append(q.DNSNames, n)
			}
		}
	case mode == 0:
		q.Pending = true
	case mode == 1:
		// No name; deny rules may match by DNS address.
		for _, n := range p.LiteralNames() {
			if g.next()%2 == 0 {
				q.DNSNames = append(q.DNSNames, n)
			}
		}
	default:
		q.Name = []string{"", "www."}[g.next()%2] + g.pick(fuzzNames)
	}
	return q
}

// FuzzDecide checks Decide against the rule-by-rule reference (Explain) on
// generated policies, and the properties design.md states: a matching deny
// rule makes the verdict deny; a decision names a rule of the policy or
// "default"; a pending flow is final only when no name could change it.
func FuzzDecide(f *testing.F) {
	f.Add([]byte{0, 3, 1, 1, 0, 2, 1, 0, 0, 0, 3, 1, 2, 2})             // deny and allow on overlapping names
	f.Add([]byte{1, 2, 0, 2, 0, 0, 1, 4, 2, 3, 1, 0, 1, 2, 0, 2, 3, 2}) // default allow, cidr + name rules
	f.Add([]byte{0, 5, 1, 27, 1, 1, 2, 3, 9, 0, 31, 2, 0, 1, 1, 1, 0})  // from, ports and proto restrictions
	f.Add([]byte("pending flows and port 22 by DNS"))
	f.Fuzz(func(t *testing.T, data []byte) {
		g := &gen{b: data}
		text, enforcedText := g.policy()
		p, err := Parse("gen.yaml", []byte(text), Options{})
		if err != nil {
			return // e.g. a rule that ended up with neither domains nor cidrs
		}
		q := g.query(p)
		d := p.Decide(q)
		// Shadow rules change nothing that is enforced. (A shadow rule with
		// domains may make a SYN wait for the name, to log what it would
		// have denied: so without shadow rules a pending flow may be final
		// where it is not with them, never the other way round.)
		if pe, err := Parse("enforced.yaml", []byte(enforcedText), Options{}); err == nil {
			de := pe.Decide(q)
			if d.Final && (!de.Final || de.Verdict != d.Verdict || de.Rule != d.Rule || de.Verify != d.Verify) {
				t.Fatalf("shadow rules changed the enforced decision: %+v, without them %+v\n%s", d, de, text)
			}
		}
		ex := p.Explain(q)
		if ex.Decision != d {
			t.Fatalf("Decide %+v != Explain %+v\nquery %s\n%s", d, ex.Decision, describe(&q), text)
		}
		if d.Final && (d.RuleIndex >= len(p.rules) || (d.RuleIndex < 0) != (d.Rule == DefaultRule) ||
			(d.RuleIndex >= 0 && p.rules[d.RuleIndex].name != d.Rule)) {
			t.Fatalf("decision names no rule of the policy: %+v", d)
		}
		denyMatched := false
		for _, rt := range ex.Rules {
			if rt.Match && rt.Action == "deny" && !rt.Shadow {
				denyMatched = true
			}
		}
		if denyMatched && (d.Verdict != Deny || d.Reason != ReasonRule) {
			t.Fatalf("a deny rule matched but the decision is %+v\n%s", d, text)
		}
		if q.Pending && q.Inspected && !d.Final {
			// Not final: some name must lead to a different outcome than
			// no name at all, or a deny rule would have decided.
			if denyMatched {
				t.Fatalf("pending flow left undecided although a deny rule matched: %+v", d)
			}
		}
		if d.Final && q.Pending && q.Proto == TCP && p.SYNUndecided(q.Port) {
			// The rules forward SYNs to such a port without holding them.
			t.Fatalf("port %d is SYN-undecided, but a SYN to it was decided %s by %s\n%s", q.Port, d.Verdict, d.Rule, text)
		}
		if d.Final && q.Pending && q.Inspected {
			// Final on the SYN: every name must give the same verdict and rule.
			for _, n := range append([]string{""}, fuzzNames...) {
				q2 := q
				q2.Pending, q2.Name = false, n
				if d2 := p.Decide(q2); d2.Verdict != d.Verdict || d2.Rule != d.Rule {
					t.Fatalf("decided on the SYN as %s by %s, but name %q gets %s by %s\n%s", d.Verdict, d.Rule, n, d2.Verdict, d2.Rule, text)
				}
			}
		}
	})
}
