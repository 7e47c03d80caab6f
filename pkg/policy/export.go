package policy

// NamedPattern is a domain entry of a rule in force, for writing the
// policy's names into another system's format (egressd export).
type NamedPattern struct {
	Rule string
	Name string // the normalised base name: "example.com"
	// Self and Under say what the entry matches: the name itself
	// ("example.com", ".example.com") and the names under it
	// ("*.example.com", ".example.com").
	Self, Under bool
}

// Patterns returns the domain entries of the rules in force whose action
// is v, in file order; shadow rules are left out (they enforce nothing).
func (p *Policy) Patterns(v Verdict) []NamedPattern {
	var out []NamedPattern
	for i := range p.rules {
		r := &p.rules[i]
		if r.action != v || r.shadow {
			continue
		}
		for _, pat := range r.domains {
			out = append(out, NamedPattern{Rule: r.name, Name: pat.base, Self: pat.kind != anySub, Under: pat.kind != exact})
		}
	}
	return out
}
