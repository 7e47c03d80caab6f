package importer

import (
	"fmt"
	"path/filepath"
	"strings"
)

// ANF translates the JSON of `aws network-firewall describe-rule-group`
// (or its RuleGroup object alone, as CloudFormation and Terraform hold it).
//
// A stateful domain-list rule group (RulesSource.RulesSourceList) becomes
// one rule: Targets are domains in egressd's own syntax ("abc.example.com"
// that name, ".example.com" it and every name under it), TargetTypes
// TLS_SNI and HTTP_HOST the ports 443 and 80, GeneratedRulesType ALLOWLIST
// an allow rule and DENYLIST a deny rule, and the HOME_NET IP set, when
// the group defines it, the rule's sources. Suricata rules (RulesString),
// 5-tuple stateful rules and stateless rules are noted, not translated.
func ANF(file string, data []byte) (*Result, error) {
	root, err := parseJSON(data)
	if err != nil {
		return nil, inFile(file, err)
	}
	r := &Result{Source: "AWS Network Firewall", Files: []string{file}, Default: "deny"}
	at := func(n *jnode) Origin {
		if n == nil {
			return Origin{File: file}
		}
		return Origin{file, n.line}
	}
	if root.kind != '{' {
		return nil, fmt.Errorf("%s:%d: not a rule group: want the JSON object of describe-rule-group", file, root.line)
	}
	group := root.get("RuleGroup")
	if group == nil && root.get("RulesSource") != nil {
		group = root // the RuleGroup object alone
	}
	if group == nil {
		return nil, fmt.Errorf("%s:%d: no RuleGroup: want the output of aws network-firewall describe-rule-group", file, root.line)
	}
	name := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	if n := root.get("RuleGroupResponse", "RuleGroupName"); n != nil && n.kind == 's' && n.str != "" {
		name = n.str
	}
	if t := root.get("RuleGroupResponse", "Type"); t != nil && t.kind == 's' && t.str != "STATEFUL" {
		r.note(at(t), "rule group %s is %s: only stateful domain lists are translated", name, t.str)
	}
	src := group.get("RulesSource")
	if src == nil {
		r.note(at(group), "rule group %s has no RulesSource: nothing to translate", name)
		return r, nil
	}
	if rs := src.get("RulesString"); rs != nil {
		rules := 0
		for l := range strings.Lines(rs.str) {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				rules++
			}
		}
		r.note(at(rs), "rule group %s: %d Suricata rules (RulesString) not translated: egressd decides by name and address, write them as rules by hand", name, rules)
	}
	if sr := src.get("StatefulRules"); sr != nil {
		for _, it := range sr.items {
			r.note(at(it), "rule group %s: a 5-tuple stateful rule (StatefulRules) not translated: write it as a rule with cidrs and ports", name)
		}
		if sr.kind != '[' {
			r.note(at(sr), "rule group %s: StatefulRules is not a list", name)
		}
	}
	if sl := src.get("StatelessRulesAndCustomActions"); sl != nil {
		r.note(at(sl), "rule group %s: stateless rules not translated", name)
	}
	list := src.get("RulesSourceList")
	if list == nil {
		return r, nil
	}
	if list.kind != '{' {
		return nil, fmt.Errorf("%s:%d: RulesSourceList is not an object", file, list.line)
	}
	bad := func(n *jnode) { r.note(at(n), "rule group %s: not a string, left out", name) }
	rule := Rule{Name: ruleName("anf", name), Origin: at(list), Proto: "tcp"}
	typ := list.get("GeneratedRulesType")
	switch {
	case typ == nil || typ.kind != 's':
		return nil, fmt.Errorf("%s:%d: RulesSourceList has no GeneratedRulesType (ALLOWLIST or DENYLIST)", file, list.line)
	case typ.str == "ALLOWLIST":
		rule.Action = "allow"
		r.note(at(typ), "rule group %s is an allow list: Network Firewall drops only the other TLS and HTTP flows it inspects and passes other protocols unless another rule drops them; egressd's default deny denies those too (add rules for them)", name)
	case typ.str == "DENYLIST":
		rule.Action = "deny"
		r.note(at(typ), "rule group %s is a deny list, which lets everything else through; the imported policy's default is deny (set default: allow to keep the deny list's meaning)", name)
	default:
		return nil, fmt.Errorf("%s:%d: GeneratedRulesType %q is neither ALLOWLIST nor DENYLIST", file, typ.line, typ.str)
	}
	rule.What = fmt.Sprintf("rule group %s, %s", name, typ.str)
	rule.Origin = at(typ)
	for _, t := range list.get("TargetTypes").strings(bad) {
		switch t.str {
		case "TLS_SNI":
			rule.Ports = append(rule.Ports, Item{"443", at(t)})
		case "HTTP_HOST":
			rule.Ports = append(rule.Ports, Item{"80", at(t)})
		default:
			r.note(at(t), "rule group %s: target type %q not translated", name, t.str)
		}
	}
	if len(rule.Ports) == 0 {
		r.note(at(list), "rule group %s has no TargetTypes egressd knows (TLS_SNI, HTTP_HOST): not translated", name)
		return r, nil
	}
	for _, t := range list.get("Targets").strings(bad) {
		rule.Domains = append(rule.Domains, Item{t.str, at(t)})
	}
	if len(rule.Domains) == 0 {
		r.note(at(list), "rule group %s has no Targets: not translated", name)
		return r, nil
	}
	home := group.get("RuleVariables", "IPSets", "HOME_NET", "Definition")
	for _, d := range home.strings(bad) {
		if !isCIDR(d.str) {
			r.note(at(d), "rule group %s: HOME_NET entry %q is not a CIDR, left out", name, d.str)
			continue
		}
		rule.From = append(rule.From, Item{d.str, at(d)})
	}
	if home == nil {
		r.note(at(list), "rule group %s sets no HOME_NET, so Network Firewall applies it to the firewall VPC's CIDR; the imported rule applies to every source (add from: with that CIDR)", name)
	} else if len(rule.From) == 0 {
		r.note(at(home), "rule group %s: no usable HOME_NET entry, so its rule is left out (it would apply to every source)", name)
		return r, nil
	}
	r.Rules = append(r.Rules, rule)
	return r, nil
}
