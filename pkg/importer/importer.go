package importer

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"unicode"
)

// Origin is where something came from: a file and a line (0: the file as
// a whole).
type Origin struct {
	File string
	Line int
}

func (o Origin) String() string {
	if o.Line == 0 {
		return o.File
	}
	return fmt.Sprintf("%s:%d", o.File, o.Line)
}

// Item is one value of a rule (a name, a CIDR, a port) and where it came
// from.
type Item struct {
	Value string
	From  Origin
}

// Rule is one translated rule.
type Rule struct {
	Name    string
	Action  string // allow | deny
	What    string // what it was in the source, for its comment
	From    []Item // source CIDRs; none: every source
	Domains []Item
	CIDRs   []Item
	Ports   []Item
	Proto   string // tcp | udp | ""
	Origin  Origin
}

// Note is something that was not translated, or that egressd will do
// differently, at its source line.
type Note struct {
	Origin
	Msg string
}

func (n Note) String() string { return oneLine(n.Origin.String() + ": " + n.Msg) }

// oneLine is s as one line of text safe to print and to put in a YAML
// comment: what the source file held beyond printable characters (line
// breaks, controls, C1 controls a terminal would act on, bidirectional
// overrides, invalid UTF-8) becomes '?'.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r != ' ' && !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

// Result is a translation.
type Result struct {
	Source  string // the product: "AWS Network Firewall", "Squid", "Smokescreen"
	Files   []string
	Default string // allow | deny
	Rules   []Rule
	Notes   []Note
}

func (r *Result) note(o Origin, format string, a ...any) {
	r.Notes = append(r.Notes, Note{o, fmt.Sprintf(format, a...)})
}

// Merge puts several results (several files of one product) into one.
// The default is deny unless every result's is allow.
func Merge(rs ...*Result) *Result {
	out := &Result{Default: "deny"}
	allow := len(rs) > 0
	for _, r := range rs {
		out.Source = r.Source
		out.Files = append(out.Files, r.Files...)
		out.Rules = append(out.Rules, r.Rules...)
		out.Notes = append(out.Notes, r.Notes...)
		allow = allow && r.Default == "allow"
	}
	if allow {
		out.Default = "allow"
	}
	return out
}

// ruleName makes a valid, short rule name from parts.
func ruleName(parts ...string) string {
	n := strings.Join(parts, "-")
	n = nameBad.ReplaceAllString(n, "-")
	n = strings.Trim(n, "-._")
	if n == "" {
		n = "imported"
	}
	if len(n) > 56 {
		n = strings.TrimRight(n[:56], "-._")
	}
	return n
}

var nameBad = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// everyDestination is what a rule with no names and no addresses stands
// for: cidrs that hold every address.
var everyDestination = []string{"0.0.0.0/0", "::/0"}

// isCIDR reports whether s is an address or a CIDR.
func isCIDR(s string) bool {
	if _, err := netip.ParsePrefix(s); err == nil {
		return true
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}
