// Package policy holds egressd's policy: the YAML format, its validation,
// and the compiled, immutable matcher that decides a flow.
//
// A policy is a list of rules, each allowing or denying flows by
// destination name (domains), destination address (cidrs), source address
// (from), port and protocol, plus a default. Load reads and validates a
// file, reporting every problem with its line; the result is compiled once
// into indexes (a domain suffix map and a CIDR prefix table) so that Decide
// costs a few map lookups and no allocation, whatever the policy's size.
//
// Matching (design.md): names are compared case-insensitively, without a
// trailing dot, in punycode. "example.com" matches only itself;
// "*.example.com" matches any subdomain at any depth but not the apex;
// ".example.com" matches the apex and every subdomain. A rule with both
// domains and cidrs needs both to match. Deny rules win over allow rules;
// then allow; then the default. Every decision names the rule that made it,
// or "default".
//
// The package does no I/O beyond reading the policy file, and never
// resolves names: on a port that carries no name, the caller says which of
// the policy's literal names the destination belongs to (Query.DNSNames).
package policy
