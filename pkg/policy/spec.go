package policy

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The wire form of a policy file, as written, with the line of every value
// so that each problem can be reported where it is. Compile turns a Spec
// into a Policy; nothing decides on a Spec.

// Spec is a policy file as written.
type Spec struct {
	Version     value
	Default     value
	Owner       value // optional: who owns the file (a team), for people and explain
	Rules       []RuleSpec
	Tests       []TestSpec
	defaultLine int    // line of the "default" key, for errors about it
	defaultFile string // in a directory, the file that sets the default
}

// RuleSpec is one entry of rules:.
type RuleSpec struct {
	File              string // in a directory, the file the rule is in; "": the policy's file
	Owner             string // the owner: of the rule's file
	Line              int    // the line where the rule's mapping starts
	Name              value
	Description       value
	From              []value        // source CIDRs or addresses; with FromSelectors empty: every source
	FromSelectors     []SelectorSpec // from entries that select workloads (security groups, tags)
	Domains           []value
	CIDRs             []value
	Ports             []value // numbers or "low-high" ranges; empty: every port
	Proto             value   // tcp | udp | any; empty: any
	Action            value   // allow | deny
	AllowPublicSuffix value   // a bool: accept wildcards over a public suffix
	Shadow            value   // a bool, deny rules only: log what it would deny, enforce nothing
	Expires           value   // an RFC 3339 time in UTC: the rule is dropped at that instant; empty: never
}

// TestSpec is one entry of tests:, a flow and the verdict it must get.
type TestSpec struct {
	File   string // in a directory, the file the test is in; "": the policy's file
	Line   int
	Src    value
	Dst    value // optional: without it, no CIDR condition matches
	Name   value // optional: the name the flow carries
	Port   value
	Proto  value // optional: tcp (default) | udp
	Expect value // allow | deny
	Rule   value // optional: the rule (or "default") that must decide
}

// value is a scalar with its line. set is false when the key was absent.
type value struct {
	s    string
	line int
	set  bool
}

// maxPolicyBytes bounds what ParseSpec reads: a policy is configuration,
// and a 64 MiB file is a mistake (or an attack on the loader).
const maxPolicyBytes = 64 << 20

// ParseSpec reads a policy file's YAML into a Spec, reporting every
// structural problem (syntax, unknown or duplicate keys, wrong types) with
// its line. file names the source in errors.
func ParseSpec(file string, r io.Reader) (*Spec, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxPolicyBytes+1))
	if err != nil {
		return nil, &Error{File: file, Msg: fmt.Sprintf("read: %v", err)}
	}
	if len(data) > maxPolicyBytes {
		return nil, &Error{File: file, Msg: fmt.Sprintf("larger than %d MiB; a policy this size is a mistake", maxPolicyBytes>>20)}
	}
	c := &errs{file: file}
	spec := parseSpec(c, data, false)
	if len(c.list) > 0 {
		sortErrors(c.list)
		return nil, c.list
	}
	return spec, nil
}

// parseSpec reads one file. A member of a directory (member) may leave
// the default to another file.
func parseSpec(c *errs, data []byte, member bool) *Spec {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			c.add(1, "the file is empty; a policy needs at least \"version: 1\" and \"default\"")
		} else {
			line, msg := yamlSyntaxError(err, data)
			c.add(line, "%s", msg)
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		line := 0
		if err == nil {
			line = extra.Line
		}
		c.add(line, "a second YAML document (\"---\"); a policy file holds one")
		return nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		c.add(root.Line, "the top level must be a mapping with version, default, rules and tests")
		return nil
	}
	s := &Spec{}
	mapping(c, root, "the top level", topKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "version":
			s.Version = scalar(c, v, key)
		case "default":
			s.Default, s.defaultLine = scalar(c, v, key), k.Line
		case "owner":
			s.Owner = scalar(c, v, key)
		case "rules":
			for _, n := range sequence(c, v, key) {
				s.Rules = append(s.Rules, parseRule(c, n))
			}
		case "tests":
			for _, n := range sequence(c, v, key) {
				s.Tests = append(s.Tests, parseTest(c, n))
			}
		}
	})
	if !s.Version.set {
		c.add(root.Line, "missing \"version\"; add \"version: 1\"")
	}
	if member {
		return s
	}
	if !s.Default.set {
		c.add(root.Line, "missing \"default\"; add \"default: deny\" (or allow)")
	}
	return s
}

func parseRule(c *errs, n *yaml.Node) RuleSpec {
	r := RuleSpec{Line: n.Line}
	if n.Kind != yaml.MappingNode {
		c.add(n.Line, "a rule must be a mapping (name, domains or cidrs, action, ...)")
		return r
	}
	first := len(c.list)
	defer func() {
		// Problems found before the rule's name was read still name it.
		if r.Name.set {
			for _, e := range c.list[first:] {
				e.Msg = fmt.Sprintf("rule %q: %s", r.Name.s, e.Msg)
			}
		}
	}()
	mapping(c, n, "a rule", ruleKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "name":
			r.Name = scalar(c, v, key)
		case "description":
			r.Description = scalar(c, v, key)
		case "from":
			r.From, r.FromSelectors = parseFrom(c, v)
		case "domains":
			r.Domains = scalars(c, v, key)
		case "cidrs":
			r.CIDRs = scalars(c, v, key)
		case "ports":
			r.Ports = scalars(c, v, key)
		case "proto":
			r.Proto = scalar(c, v, key)
		case "action":
			r.Action = scalar(c, v, key)
		case "allow_public_suffix":
			r.AllowPublicSuffix = scalar(c, v, key)
		case "shadow":
			r.Shadow = scalar(c, v, key)
		case "expires":
			r.Expires = scalar(c, v, key)
		}
	})
	return r
}

func parseTest(c *errs, n *yaml.Node) TestSpec {
	t := TestSpec{Line: n.Line}
	if n.Kind != yaml.MappingNode {
		c.add(n.Line, "a test must be a mapping like {src: 10.0.1.7, name: api.github.com, port: 443, expect: deny}")
		return t
	}
	mapping(c, n, "a test", testKeys, func(key string, k, v *yaml.Node) {
		val := scalar(c, v, key)
		switch key {
		case "src":
			t.Src = val
		case "dst":
			t.Dst = val
		case "name":
			t.Name = val
		case "port":
			t.Port = val
		case "proto":
			t.Proto = val
		case "expect":
			t.Expect = val
		case "rule":
			t.Rule = val
		}
	})
	return t
}

// The keys each mapping accepts, in the order the error message lists them.
var (
	topKeys  = []string{"version", "default", "owner", "rules", "tests"}
	ruleKeys = []string{"name", "description", "from", "domains", "cidrs", "ports", "proto", "action", "allow_public_suffix", "shadow", "expires"}
	testKeys = []string{"src", "dst", "name", "port", "proto", "expect", "rule"}
)

// mapping walks a mapping node, calling field for each key in known and
// reporting unknown and repeated keys.
func mapping(c *errs, n *yaml.Node, what string, known []string, field func(key string, k, v *yaml.Node)) {
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolveAlias(n.Content[i+1])
		switch {
		case k.Kind != yaml.ScalarNode:
			c.add(k.Line, "%s has a key that is not a plain word", what)
		case k.Value == "<<":
			c.add(k.Line, "merge keys (\"<<\") are not supported; write the fields out")
		case seen[k.Value] != 0:
			c.add(k.Line, "%q appears twice in %s (first on line %d)", k.Value, what, seen[k.Value])
		case !slices.Contains(known, k.Value):
			seen[k.Value] = k.Line
			hint := ""
			if near := closest(k.Value, known); near != "" {
				hint = fmt.Sprintf("did you mean %q? ", near)
			}
			c.add(k.Line, "unknown key %q in %s; %sknown keys: %s", k.Value, what, hint, strings.Join(known, ", "))
		default:
			seen[k.Value] = k.Line
			field(k.Value, k, v)
		}
	}
}

// closest returns the known key within two edits of key, if any
// ("domain" -> "domains", "cidr" -> "cidrs", "acton" -> "action").
func closest(key string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two short strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// scalar reads a single value.
func scalar(c *errs, n *yaml.Node, field string) value {
	if n.Kind != yaml.ScalarNode {
		c.add(n.Line, "%q must be a single value, not a %s", field, kindName(n))
		return value{line: n.Line}
	}
	if n.Tag == "!!null" {
		c.add(n.Line, "%q is empty", field)
		return value{line: n.Line}
	}
	return value{s: n.Value, line: n.Line, set: true}
}

// scalars reads a list of values; a single value is refused, since
// "domains: example.com" is easy to mistake for a list.
func scalars(c *errs, n *yaml.Node, field string) []value {
	items := sequence(c, n, field)
	out := make([]value, 0, len(items))
	for _, it := range items {
		if v := scalar(c, it, field+" entry"); v.set {
			out = append(out, v)
		}
	}
	if n.Kind == yaml.SequenceNode && len(n.Content) == 0 {
		c.add(n.Line, "%q is an empty list; leave the key out or give it entries", field)
	}
	return out
}

func sequence(c *errs, n *yaml.Node, field string) []*yaml.Node {
	if n.Kind != yaml.SequenceNode {
		c.add(n.Line, "%q must be a list, like %s: [a, b]", field, field)
		return nil
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, it := range n.Content {
		out[i] = resolveAlias(it)
	}
	return out
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "list"
	case yaml.MappingNode:
		return "mapping"
	}
	return "value"
}

// sortErrors orders problems by file, then line (a directory's files in
// name order, as they are read).
func sortErrors(l ErrorList) {
	sort.SliceStable(l, func(i, j int) bool {
		if l[i].File != l[j].File {
			return l[i].File < l[j].File
		}
		return l[i].Line < l[j].Line
	})
}
