package importer

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/egressd/egressd/pkg/policy"
)

// maxRounds bounds how often Policy recompiles after leaving out what
// egressd refuses: each round leaves out at least one entry.
const maxRounds = 64

// Policy writes the translation as an egressd policy that egressd's loader
// accepts (with opts' inspect ports), leaving out what it refuses, and
// returns it with every note: the parser's and those of what was left out.
func (r *Result) Policy(opts policy.Options) ([]byte, []Note, error) {
	rules := make([]Rule, len(r.Rules))
	copy(rules, r.Rules)
	uniqueNames(rules)
	notes := append([]Note(nil), r.Notes...)
	for range maxRounds {
		text, where := r.write(rules, notes)
		_, err := policy.Parse("imported.yaml", text, opts)
		if err == nil {
			return text, notes, nil
		}
		var dropped bool
		rules, notes, dropped = leaveOut(rules, notes, where, policy.AsList(err))
		if !dropped {
			return nil, notes, fmt.Errorf("the translation does not compile, and nothing in it can be left out: %w", err)
		}
	}
	return nil, notes, fmt.Errorf("the translation does not compile after leaving out %d rounds of entries", maxRounds)
}

// spot is what a line of the written policy holds: a rule (item < 0) or
// one of its items.
type spot struct {
	rule int
	kind string // "from", "domains", "cidrs", "ports"; "" for the rule itself
	item int
}

// leaveOut drops what the problems point at and notes why; a rule that
// would be widened by it (every source, name or address of a kind gone)
// goes whole.
func leaveOut(rules []Rule, notes []Note, where map[int]spot, problems policy.ErrorList) ([]Rule, []Note, bool) {
	dropRule := map[int]string{}
	dropItem := map[spot]string{}
	for _, e := range problems {
		s, ok := where[e.Line]
		if !ok {
			continue
		}
		msg := strings.TrimPrefix(e.Msg, fmt.Sprintf("rule %q: ", rules[s.rule].Name))
		if s.kind == "" {
			dropRule[s.rule] = msg
		} else {
			dropItem[s] = msg
		}
	}
	if len(dropRule) == 0 && len(dropItem) == 0 {
		return rules, notes, false
	}
	var out []Rule
	for i, r := range rules {
		if msg, ok := dropRule[i]; ok {
			notes = append(notes, Note{r.Origin, fmt.Sprintf("rule %s left out: egressd refuses it: %s", r.Name, msg)})
			continue
		}
		lists := map[string]*[]Item{"from": &r.From, "domains": &r.Domains, "cidrs": &r.CIDRs, "ports": &r.Ports}
		whole := ""
		for _, kind := range []string{"from", "domains", "cidrs", "ports"} {
			list := lists[kind]
			var kept []Item
			for j, it := range *list {
				if msg, ok := dropItem[spot{i, kind, j}]; ok {
					notes = append(notes, Note{it.From, fmt.Sprintf("%s %s left out of rule %s: egressd refuses it: %s", kind, it.Value, r.Name, msg)})
					continue
				}
				kept = append(kept, it)
			}
			if len(*list) > 0 && len(kept) == 0 {
				whole = kind
			}
			*list = kept
		}
		if whole != "" {
			notes = append(notes, Note{r.Origin, fmt.Sprintf("rule %s left out: none of its %s is left, and without them it would match more than it did", r.Name, whole)})
			continue
		}
		out = append(out, r)
	}
	return out, notes, true
}

// uniqueNames numbers rules whose names repeat.
func uniqueNames(rules []Rule) {
	used := map[string]bool{}
	for i := range rules {
		n := rules[i].Name
		for k := 2; used[n]; k++ {
			n = fmt.Sprintf("%s-%d", rules[i].Name, k)
		}
		used[n] = true
		rules[i].Name = n
	}
}

// write renders the policy, and where each rule and item is in it.
func (r *Result) write(rules []Rule, notes []Note) ([]byte, map[int]spot) {
	var b strings.Builder
	line := 1
	where := map[int]spot{}
	emit := func(s string) {
		b.WriteString(s)
		b.WriteByte('\n')
		line++
	}
	emit(comment(fmt.Sprintf("Imported by egressd import from %s: %s.", r.Source, strings.Join(r.Files, ", "))))
	emit("# Every rule and entry names its source line. What was not translated, or works")
	emit("# differently in egressd, is listed at the end: review it before enforcing.")
	emit("version: 1")
	def := r.Default
	if def != "allow" {
		def = "deny"
	}
	emit("default: " + def)
	if len(rules) == 0 {
		emit("rules: []")
	} else {
		emit("rules:")
	}
	for i, ru := range rules {
		where[line] = spot{rule: i}
		emit(fmt.Sprintf("  - name: %s  %s", quote(ru.Name), comment(ru.Origin.String()+": "+ru.What)))
		for _, kind := range []string{"from", "domains", "cidrs", "ports"} {
			list := map[string][]Item{"from": ru.From, "domains": ru.Domains, "cidrs": ru.CIDRs, "ports": ru.Ports}[kind]
			if len(list) == 0 {
				continue
			}
			emit("    " + kind + ":")
			for j, it := range list {
				where[line] = spot{i, kind, j}
				emit(fmt.Sprintf("      - %s  %s", quote(it.Value), comment(it.From.String())))
			}
		}
		if ru.Proto != "" {
			emit("    proto: " + ru.Proto)
		}
		emit("    action: " + ru.Action)
	}
	if len(notes) > 0 {
		emit("")
		emit("# Not translated, or different in egressd:")
		for _, n := range notes {
			emit(comment("  " + n.String()))
		}
	}
	return []byte(b.String()), where
}

// quote writes a value as a YAML double-quoted scalar: JSON's string
// syntax, which is a subset of it (invalid UTF-8 becomes U+FFFD), with
// every character YAML does not allow in a document written as an escape
// (JSON leaves C1 controls and U+FFFE, U+FFFF raw; a YAML parser refuses
// the whole file for one).
func quote(s string) string {
	b, _ := json.Marshal(s)
	var q strings.Builder
	for _, r := range string(b) {
		if notYAML(r) {
			fmt.Fprintf(&q, "\\u%04X", r)
			continue
		}
		q.WriteRune(r)
	}
	return q.String()
}

// comment is a YAML comment holding s on one line (oneLine).
func comment(s string) string { return "# " + oneLine(s) }

// notYAML reports whether r is outside YAML 1.2's printable characters
// (section 5.1: tab, line feed, carriage return, 0x20-0x7E, 0x85,
// 0xA0-0xD7FF, 0xE000-0xFFFD, 0x10000 and up).
func notYAML(r rune) bool {
	switch {
	case r == '\t' || r == '\n' || r == '\r' || r == 0x85:
		return false
	case r < 0x20 || r >= 0x7f && r < 0xa0:
		return true
	case r >= 0xd800 && r < 0xe000, r == 0xfffe, r == 0xffff:
		return true
	}
	return r > 0x10ffff
}
