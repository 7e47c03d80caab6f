package importer

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Smokescreen translates a Smokescreen egress ACL (version v1): each
// service (role) becomes an allow rule of its allowed_domains
// ("example.com" that name, "*.example.com" every name under it but not
// it, as in egressd), global_allow_list an allow rule for every source and
// global_deny_list a deny rule. Smokescreen knows a role by its client
// certificate, egressd a source by its address: roles give the CIDRs of
// each role, and a service whose role has none is noted and left out (its
// rule would apply to every source). The default entry applies to roles
// the ACL does not list, so its rule has no from.
//
// Noted, as they differ: action report (Smokescreen lets the rest through
// and logs it; egressd denies it), action open (allows everything), a
// role's allowed domain that global_deny_list also holds (Smokescreen lets
// the role through, egressd's deny wins), mitm_domains and
// allowed_external_proxies (not translated).
func Smokescreen(file string, data []byte, roles map[string][]netip.Prefix) (*Result, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, fmt.Errorf("%s: empty", file)
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: not a Smokescreen ACL (want a mapping with version, services, default)", file, root.Line)
	}
	r := &Result{Source: "Smokescreen", Files: []string{file}, Default: "deny"}
	at := func(n *yaml.Node) Origin { return Origin{file, n.Line} }
	top := yamlMap(root)
	if v := top["version"]; v == nil || v.Value != "v1" {
		return nil, fmt.Errorf("%s:%d: not a Smokescreen ACL of version v1", file, root.Line)
	}
	allowedBy := map[string][]string{} // domain -> rules that allow it
	addRule := func(n *yaml.Node, role string, everyone bool) {
		m := yamlMap(n)
		name, action := yamlString(m["name"]), yamlString(m["action"])
		if everyone {
			name = "default"
		}
		rule := Rule{Name: ruleName("smokescreen", name), Action: "allow", Origin: at(n),
			What: fmt.Sprintf("%s (project %s, action %s)", name, yamlString(m["project"]), action)}
		for _, k := range []string{"mitm_domains", "allowed_external_proxies"} {
			if m[k] != nil {
				r.note(at(m[k]), "service %s: %s not translated", name, k)
			}
		}
		if !everyone {
			cidrs, ok := roles[role]
			if !ok {
				r.note(at(n), "service %s is known to Smokescreen by its client certificate; give its addresses (--role %s=CIDR) to translate it: left out", name, role)
				return
			}
			for _, c := range cidrs {
				rule.From = append(rule.From, Item{c.String(), Origin{File: "--role " + role}})
			}
		} else {
			r.note(at(n), "the default applies to the roles the ACL does not list; its egressd rule applies to every source, those of listed roles too")
		}
		for _, d := range yamlStrings(m["allowed_domains"]) {
			rule.Domains = append(rule.Domains, Item{d.Value, at(d)})
		}
		switch action {
		case "enforce":
		case "report":
			r.note(at(m["action"]), "service %s reports: Smokescreen lets what its list lacks through and logs it, egressd denies it (run egressd in monitor mode first)", name)
		case "open":
			r.note(at(m["action"]), "service %s is open: Smokescreen lets everything through; its rule allows every destination", name)
			if everyone {
				r.Default = "allow"
				return
			}
			rule.Domains = nil
			for _, c := range everyDestination {
				rule.CIDRs = append(rule.CIDRs, Item{c, at(m["action"])})
			}
		default:
			r.note(at(n), "service %s: action %q is not enforce, report or open: left out", name, action)
			return
		}
		if len(rule.Domains) == 0 && len(rule.CIDRs) == 0 {
			return
		}
		for _, d := range rule.Domains {
			allowedBy[d.Value] = append(allowedBy[d.Value], rule.Name)
		}
		r.Rules = append(r.Rules, rule)
	}
	if s := top["services"]; s != nil {
		if s.Kind != yaml.SequenceNode {
			return nil, fmt.Errorf("%s:%d: services is not a list", file, s.Line)
		}
		for _, svc := range s.Content {
			if svc.Kind != yaml.MappingNode {
				r.note(at(svc), "a service that is not a mapping: left out")
				continue
			}
			addRule(svc, yamlString(yamlMap(svc)["name"]), false)
		}
	}
	if d := top["default"]; d != nil && d.Kind == yaml.MappingNode {
		addRule(d, "", true)
	}
	if l := top["global_allow_list"]; l != nil {
		rule := Rule{Name: "smokescreen-global-allow", Action: "allow", Origin: at(l), What: "global_allow_list"}
		for _, d := range yamlStrings(l) {
			rule.Domains = append(rule.Domains, Item{d.Value, at(d)})
		}
		if len(rule.Domains) > 0 {
			r.Rules = append(r.Rules, rule)
		}
	}
	if l := top["global_deny_list"]; l != nil {
		rule := Rule{Name: "smokescreen-global-deny", Action: "deny", Origin: at(l), What: "global_deny_list"}
		for _, d := range yamlStrings(l) {
			rule.Domains = append(rule.Domains, Item{d.Value, at(d)})
			if by := allowedBy[d.Value]; len(by) > 0 {
				r.note(at(d), "%s is in global_deny_list and allowed by %s: Smokescreen lets those roles through, egressd's deny rule wins", d.Value, strings.Join(by, ", "))
			}
		}
		if len(rule.Domains) > 0 {
			r.Rules = append(r.Rules, rule)
		}
	}
	return r, nil
}

func yamlMap(n *yaml.Node) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	if n == nil || n.Kind != yaml.MappingNode {
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		out[n.Content[i].Value] = n.Content[i+1]
	}
	return out
}

func yamlString(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func yamlStrings(n *yaml.Node) []*yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil
	}
	var out []*yaml.Node
	for _, it := range n.Content {
		if it.Kind == yaml.ScalarNode && it.Value != "" {
			out = append(out, it)
		}
	}
	return out
}
