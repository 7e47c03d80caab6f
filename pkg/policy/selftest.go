package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// testCase is a compiled entry of the policy's tests: block.
type testCase struct {
	file   string // in a directory, the file the test is in; "": the policy's
	line   int
	query  Query
	expect Verdict
	rule   string // "" when the test names no rule
	desc   string // the flow, in words, for failure messages
}

func compileTests(c *errs, specs []TestSpec, p *Policy) []testCase {
	var out []testCase
	defer func() { c.file = p.file }()
	for _, ts := range specs {
		c.file = orFile(ts.File, p.file)
		tc := testCase{file: ts.File, line: ts.Line}
		ok := true
		bad := func(line int, format string, args ...any) {
			c.add(line, "test: "+format, args...)
			ok = false
		}
		q := &tc.query
		switch {
		case !ts.Src.set:
			bad(ts.Line, "needs src (the client's address)")
		default:
			a, err := netip.ParseAddr(ts.Src.s)
			if err != nil {
				bad(ts.Src.line, "src %q is not an IP address", ts.Src.s)
			}
			q.Src = a.Unmap()
		}
		if ts.Dst.set {
			a, err := netip.ParseAddr(ts.Dst.s)
			if err != nil {
				bad(ts.Dst.line, "dst %q is not an IP address", ts.Dst.s)
			}
			q.Dst = a.Unmap()
		}
		q.Proto = TCP
		if ts.Proto.set {
			pr, okp := ParseProto(ts.Proto.s)
			if !okp || pr == ProtoAny {
				bad(ts.Proto.line, "proto must be tcp or udp, not %q", ts.Proto.s)
			}
			q.Proto = pr
		}
		switch {
		case !ts.Port.set:
			bad(ts.Line, "needs port (the destination port)")
		default:
			port, err := parsePort(ts.Port.s)
			if err != nil {
				bad(ts.Port.line, "%v", err)
			}
			q.Port = port
		}
		q.Inspected = p.opts.Inspected(q.Proto, q.Port)
		if ts.Name.set {
			n, err := normalizeName(ts.Name.s)
			if err != nil {
				bad(ts.Name.line, "name %q: %v", ts.Name.s, err)
			}
			// On a port without a name the test's name stands for "the
			// destination is among this name's DNS answers".
			if q.Inspected {
				q.Name = n
			} else {
				q.DNSNames = []string{n}
			}
		}
		if !ts.Dst.set && !ts.Name.set {
			bad(ts.Line, "needs dst, name or both")
		}
		switch {
		case !ts.Expect.set:
			bad(ts.Line, "needs expect: allow or deny")
		default:
			v, okv := parseVerdict(ts.Expect.s)
			if !okv {
				bad(ts.Expect.line, "expect must be allow or deny, not %q", ts.Expect.s)
			}
			tc.expect = v
		}
		if ts.Rule.set {
			if ts.Rule.s != DefaultRule && p.ruleIndex(ts.Rule.s) < 0 {
				bad(ts.Rule.line, "rule %q is not a rule of this policy (nor \"default\")", ts.Rule.s)
			}
			tc.rule = ts.Rule.s
		}
		if ok {
			tc.desc = describe(q)
			out = append(out, tc)
		}
	}
	return out
}

func describe(q *Query) string {
	s := fmt.Sprintf("%s -> ", addrString(q.Src))
	switch {
	case q.Name != "":
		s += q.Name
		if q.Dst.IsValid() {
			s += " (" + q.Dst.String() + ")"
		}
	case len(q.DNSNames) > 0:
		s += q.DNSNames[0]
		if q.Dst.IsValid() {
			s += " (" + q.Dst.String() + ")"
		}
	default:
		s += addrString(q.Dst)
	}
	return s + ":" + strconv.Itoa(int(q.Port)) + "/" + q.Proto.String()
}

// ruleIndex is the index in all (expired rules included) of the rule
// called name, or -1.
func (p *Policy) ruleIndex(name string) int {
	for i := range p.all {
		if p.all[i].name == name {
			return i
		}
	}
	return -1
}

// RunTests runs the policy's tests: block and returns one Error per test
// whose flow does not get the expected verdict (or rule), with the test's
// line, the expected and the actual outcome, and the deciding rule.
func (p *Policy) RunTests() ErrorList {
	var out ErrorList
	for _, tc := range p.tests {
		d := p.Decide(tc.query)
		if d.Verdict == tc.expect && (tc.rule == "" || tc.rule == d.Rule) {
			continue
		}
		want := tc.expect.String()
		if tc.rule != "" {
			want += " by " + tc.rule
		}
		if i := p.ruleIndex(tc.rule); i >= 0 && p.pos[i] < 0 {
			want += fmt.Sprintf(" (which expired at %s)", p.all[i].expires.Format(time.RFC3339))
		}
		file := orFile(tc.file, p.file)
		out = append(out, &Error{File: file, Line: tc.line, Msg: fmt.Sprintf(
			"test failed: %s: expected %s, got %s by %s%s", tc.desc, want, d.Verdict, d.Rule, p.ruleLine(d, file))})
	}
	return out
}

// ruleLine says where the deciding rule (or the default) is, for a
// message about file: its line, and its file when that is another one.
func (p *Policy) ruleLine(d Decision, file string) string {
	where, line := orFile(p.defFile, p.file), p.defLine
	if d.RuleIndex >= 0 {
		r := &p.rules[d.RuleIndex]
		where, line = orFile(r.file, p.file), r.line
	}
	switch {
	case line == 0:
		return ""
	case where != file:
		return fmt.Sprintf(" (%s:%d)", where, line)
	}
	return fmt.Sprintf(" (line %d)", line)
}
