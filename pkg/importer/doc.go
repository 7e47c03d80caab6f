// Package importer translates the egress filter a team runs today into an
// egressd policy: AWS Network Firewall stateful domain-list rule groups
// (the JSON of `aws network-firewall describe-rule-group`), Squid's
// configuration (acl ... dstdomain and ssl::server_name, with the
// http_access and ssl_bump lines that use them) and Stripe Smokescreen's
// ACL YAML (per-role allowed_domains).
//
// Every rule and every entry of the policy it writes carries a comment that
// names its source line. What cannot be translated (regular expressions,
// Suricata rules, negated ACLs, files of names, roles without addresses)
// and what will behave differently under egressd (precedence, defaults) is
// reported as a Note with its source line, never silently dropped. The
// policy it writes is checked by egressd's own loader: an entry egressd
// refuses (a wildcard over a public suffix, say) is left out and noted,
// and a rule that would be widened by what is left out (all of its
// sources or names gone) is left out whole.
//
// The parsers take bytes and return a Result or an error; they never
// panic, whatever the input (each is fuzzed).
package importer
