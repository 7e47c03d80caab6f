package importer

import (
	"fmt"
	"strconv"
	"strings"
)

// Squid translates a squid.conf. Its acl lines define named lists; its
// http_access and ssl_bump lines decide with them, first match wins. A
// rule is made of each line that allows or denies by these ACL types:
//
//	src                   the rule's from (addresses, CIDRs)
//	dst                   its cidrs
//	dstdomain             its domains: ".example.com" is the name and
//	                      every name under it, as in egressd
//	ssl::server_name      its domains, for TLS (ssl_bump lines: port 443)
//	port                  its ports
//	all                   nothing (every flow)
//
// "http_access allow|deny ACL..." becomes an allow or deny rule;
// "ssl_bump splice ACL..." with an ssl::server_name ACL an allow on 443,
// "ssl_bump terminate ACL..." a deny. Lines that negate an ACL ("!name"),
// and ACLs of other types (regular expressions, methods, files of names),
// are noted, not translated. The default is what Squid does when no line
// matches: the opposite of the last http_access line.
func Squid(file string, data []byte) (*Result, error) {
	r := &Result{Source: "Squid", Files: []string{file}, Default: "deny"}
	type acl struct {
		typ    string
		values []Item
		line   int
		bad    string // why it cannot be translated
	}
	acls := map[string]*acl{
		"all":       {typ: "all"},
		"localhost": {typ: "src", values: []Item{{"127.0.0.1", Origin{file, 0}}, {"::1", Origin{file, 0}}}},
	}
	lastAccess := ""
	var lastAccessAt Origin
	for lines, fields := range squidLines(data) {
		ln := lines[0]
		at := Origin{file, ln}
		switch fields[0] {
		case "acl":
			if len(fields) < 3 {
				r.note(at, "acl line without a name and a type: left out")
				continue
			}
			name, typ := fields[1], fields[2]
			a := acls[name]
			if a == nil || a.line == 0 {
				a = &acl{typ: typ, line: ln}
				acls[name] = a
			} else if a.typ != typ {
				r.note(at, "acl %s was of type %s on line %d, now %s: this line is left out", name, a.typ, a.line, typ)
				continue
			}
			vals, valLines := fields[3:], lines[3:]
			for len(vals) > 0 && strings.HasPrefix(vals[0], "-") {
				if vals[0] == "-n" || vals[0] == "--" || vals[0] == "-i" {
					vals, valLines = vals[1:], valLines[1:]
					continue
				}
				a.bad = fmt.Sprintf("its flag %s has no translation", vals[0])
				break
			}
			for i, v := range vals {
				switch {
				case strings.HasPrefix(v, `"`):
					a.bad = fmt.Sprintf("its values come from the file %s, which import does not read (list them in the rule)", v)
				case typ == "src" || typ == "dst":
					if !isCIDR(v) {
						a.bad = fmt.Sprintf("%q is not an address or CIDR (ranges and names are not translated)", v)
					}
				case typ == "port":
					if _, err := strconv.Atoi(strings.Replace(v, "-", "", 1)); err != nil {
						a.bad = fmt.Sprintf("%q is not a port or range", v)
					}
				}
				a.values = append(a.values, Item{v, Origin{file, valLines[i]}})
			}
			switch typ {
			case "src", "dst", "dstdomain", "ssl::server_name", "port":
			case "at_step":
			default:
				a.bad = fmt.Sprintf("type %s has no egressd equivalent (regular expressions, methods and the like are not translated)", typ)
			}
		case "http_access", "ssl_bump":
			if len(fields) < 2 {
				r.note(at, "%s without an action: left out", fields[0])
				continue
			}
			action := fields[1]
			if fields[0] == "http_access" {
				lastAccess, lastAccessAt = action, at
			}
			rule := Rule{Origin: at, What: strings.Join(fields, " ")}
			switch {
			case fields[0] == "http_access" && (action == "allow" || action == "deny"):
				rule.Action = action
			case fields[0] == "ssl_bump" && action == "splice":
				rule.Action = "allow"
			case fields[0] == "ssl_bump" && action == "terminate":
				rule.Action = "deny"
			case fields[0] == "ssl_bump" && (action == "peek" || action == "stare"):
				continue // how Squid reads the hello, not a decision
			case fields[0] == "ssl_bump" && action == "bump":
				r.note(at, "ssl_bump bump decrypts the flows it matches; egressd never decrypts, it decides them by name like the others")
				continue
			default:
				r.note(at, "%s %s: no egressd equivalent, left out", fields[0], action)
				continue
			}
			names, ok := []string{}, true
			for _, n := range fields[2:] {
				a := acls[strings.TrimPrefix(n, "!")]
				switch {
				case strings.HasPrefix(n, "!"):
					r.note(at, "negated ACL %s: egressd rules cannot say \"not\"; this line is not translated", n)
					ok = false
				case a == nil:
					r.note(at, "ACL %s is not defined: this line is not translated", n)
					ok = false
				case a.bad != "":
					r.note(at, "ACL %s (line %d): %s; this line is not translated", n, a.line, a.bad)
					ok = false
				case a.typ == "all" || a.typ == "at_step":
				case a.typ == "src":
					rule.From = append(rule.From, a.values...)
				case a.typ == "dst":
					rule.CIDRs = append(rule.CIDRs, a.values...)
				case a.typ == "dstdomain" || a.typ == "ssl::server_name":
					rule.Domains = append(rule.Domains, a.values...)
				case a.typ == "port":
					rule.Ports = append(rule.Ports, a.values...)
				}
				if a != nil && a.typ != "all" {
					names = append(names, strings.TrimPrefix(n, "!"))
				}
				if !ok {
					break
				}
			}
			if !ok {
				continue
			}
			if fields[0] == "ssl_bump" {
				if len(rule.Domains) == 0 {
					// "ssl_bump splice all" chooses not to decrypt; it
					// allows nothing http_access does not.
					continue
				}
				if len(rule.Ports) == 0 {
					rule.Ports = []Item{{"443", at}}
				}
			}
			if len(rule.Domains) == 0 && len(rule.CIDRs) == 0 {
				if len(rule.From) == 0 && len(rule.Ports) == 0 {
					// "http_access deny all": the default.
					continue
				}
				for _, c := range everyDestination {
					rule.CIDRs = append(rule.CIDRs, Item{c, at})
				}
			}
			rule.Name = ruleName(append([]string{"squid", fields[0], action}, names...)...)
			r.Rules = append(r.Rules, rule)
		case "include":
			r.note(at, "include is not followed: import the included file too")
		}
	}
	switch lastAccess {
	case "":
		r.note(Origin{File: file}, "no http_access line: Squid denies every request, and so does the imported policy's default")
	case "allow":
		r.Default = "allow"
		r.note(lastAccessAt, "the last http_access line allows, so Squid allows what no line matches: the imported default is allow (consider deny)")
	}
	hasAllow := false
	for _, ru := range r.Rules {
		if ru.Action == "allow" {
			hasAllow = true
		} else if hasAllow {
			r.note(ru.Origin, "Squid decides by the first line that matches, egressd lets deny rules win over allow rules: this deny also denies what an earlier allow line let through")
			break
		}
	}
	return r, nil
}

// maxSquidLine bounds one logical line (after continuations).
const maxSquidLine = 1 << 16

// squidLines yields each directive of a squid.conf split into fields,
// with the line of each field: comments and blank lines dropped, lines
// ending in a backslash joined with the next.
func squidLines(data []byte) func(yield func([]int, []string) bool) {
	return func(yield func([]int, []string) bool) {
		var fields []string
		var lines []int
		size, n := 0, 0
		for l := range strings.Lines(string(data)) {
			n++
			l = strings.TrimRight(l, "\r\n")
			if len(fields) == 0 {
				if t := strings.TrimSpace(l); t == "" || strings.HasPrefix(t, "#") {
					continue
				}
			}
			more := strings.HasSuffix(l, `\`)
			if size += len(l); size <= maxSquidLine {
				for _, f := range strings.Fields(strings.TrimSuffix(l, `\`)) {
					fields, lines = append(fields, f), append(lines, n)
				}
			}
			if more {
				continue
			}
			if len(fields) > 0 && !yield(lines, fields) {
				return
			}
			fields, lines, size = nil, nil, 0
		}
		if len(fields) > 0 {
			yield(lines, fields)
		}
	}
}
