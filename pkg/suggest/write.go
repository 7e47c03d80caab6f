package suggest

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// maxCovers bounds the observed names a suffix's comment lists.
const maxCovers = 6

// WriteYAML writes the proposal as a policy file: every rule with a comment
// per domain, a test per rule, and the flows not proposed as comments at
// the end. The output is what `egressd check` accepts.
func (s *Suggestion) WriteYAML(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Suggested by egressd suggest from %d decision lines, %s.\n", s.Lines, span(s.First, s.Last))
	b.WriteString("# Review every rule before enforcing it: each allows what was seen from its subnet, and\n")
	b.WriteString("# \".name\" entries allow every name under that one (only where several siblings were seen).\n")
	if len(s.Skipped) > 0 {
		b.WriteString("# Left out, flows whose head could not be read (nothing to allow):")
		for _, k := range sortedKeys(s.Skipped) {
			fmt.Fprintf(&b, " %d %s", s.Skipped[k], k)
		}
		b.WriteString(".\n")
	}
	b.WriteString("version: 1\ndefault: deny\n")
	if len(s.Rules) == 0 {
		b.WriteString("rules: []\n")
	} else {
		b.WriteString("rules:\n")
	}
	for _, r := range s.Rules {
		fmt.Fprintf(&b, "  - name: %s\n    from: [%s]\n", r.Name, r.From)
		ports := make([]string, len(r.Ports))
		for i, p := range r.Ports {
			ports[i] = strconv.Itoa(int(p))
		}
		fmt.Fprintf(&b, "    ports: [%s]\n    action: allow\n    domains:\n", strings.Join(ports, ", "))
		width := 0
		for _, e := range r.Entries {
			width = max(width, len(e.Domain))
		}
		for _, e := range r.Entries {
			fmt.Fprintf(&b, "      - %-*s  # %s", width, e.Domain, counts(e.Flows, e.Sources, e.First, e.Last))
			if len(e.Covers) > 0 {
				list := e.Covers
				more := ""
				if len(list) > maxCovers {
					list, more = list[:maxCovers], fmt.Sprintf(" and %d more", len(e.Covers)-maxCovers)
				}
				fmt.Fprintf(&b, "; seen: %s%s", strings.Join(list, ", "), more)
			}
			b.WriteByte('\n')
		}
	}
	if len(s.Rules) > 0 {
		b.WriteString("tests:\n")
	}
	for _, r := range s.Rules {
		proto := ""
		if r.TestUDP {
			proto = ", proto: udp"
		}
		fmt.Fprintf(&b, "  - {src: %s, name: %s, port: %d%s, expect: allow, rule: %s}\n", r.TestSrc, r.TestName, r.TestPort, proto, r.Name)
	}
	if len(s.Unnamed) > 0 {
		b.WriteString("\n# Not suggested: flows without a name a rule could allow them by. Decide each by hand\n")
		b.WriteString("# (a rule with cidrs for a destination you trust, or nothing):\n")
		for _, u := range s.Unnamed {
			name := ""
			if u.Name != "" {
				name = " " + strconv.Quote(u.Name)
			}
			fmt.Fprintf(&b, "#   %s -> %s:%d/%s%s: %s; %s\n", u.Group, u.Dst, u.Port, u.Proto, name, u.Why,
				counts(u.flows, len(u.srcs), u.first, u.last))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func counts(flows, sources int, first, last time.Time) string {
	f, src := "flows", "sources"
	if flows == 1 {
		f = "flow"
	}
	if sources == 1 {
		src = "source"
	}
	return fmt.Sprintf("%d %s, %d %s, %s", flows, f, sources, src, span(first, last))
}

func span(first, last time.Time) string {
	const layout = "2006-01-02T15:04:05Z"
	if first.Equal(last) {
		return "seen " + first.UTC().Format(layout)
	}
	return "first " + first.UTC().Format(layout) + ", last " + last.UTC().Format(layout)
}
