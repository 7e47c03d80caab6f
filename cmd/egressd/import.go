package main

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/egressd/egressd/pkg/importer"
)

const importUsage = `Usage: egressd import --from anf|squid|smokescreen [flags] FILE...

Translate the egress filter you run today into an egressd policy, written to
stdout (or -o FILE), with a comment on every rule and entry naming its
source line; what could not be translated, or works differently in egressd,
is listed at the end of the policy and on stderr, each with its source line.

  --from anf          AWS Network Firewall stateful domain-list rule groups:
                      the JSON of aws network-firewall describe-rule-group
                      (one file per group). Targets become domains,
                      TargetTypes TLS_SNI and HTTP_HOST ports 443 and 80,
                      ALLOWLIST and DENYLIST allow and deny rules, HOME_NET
                      the sources. Suricata rules are listed, not translated.
  --from squid        squid.conf: the http_access lines, and ssl_bump splice
                      and terminate, with their acls of type src, dst,
                      dstdomain, ssl::server_name and port. Regular
                      expressions, negated acls and files of names are listed.
  --from smokescreen  a Smokescreen ACL (version v1): each service's
                      allowed_domains, global_allow_list, global_deny_list.
                      Give each role's addresses with --role NAME=CIDR[,CIDR]:
                      a service without them is listed, not translated.

The policy is checked as egressd loads it (with --config's or the default
inspect ports): an entry egressd refuses, such as a wildcard over a public
suffix, is left out and listed, and a rule that would match more without
what was left out is left out whole. Review it, then run egressd check and
egressd replay --baseline against your traffic before enforcing.

Exit status: 0 translated (even with items listed), 2 on an error.

Flags:
`

// roleFlag collects --role NAME=CIDR[,CIDR].
type roleFlag map[string][]netip.Prefix

func (r roleFlag) String() string { return fmt.Sprint(map[string][]netip.Prefix(r)) }

func (r roleFlag) Set(s string) error {
	name, cidrs, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("%q is not NAME=CIDR[,CIDR]", s)
	}
	for c := range strings.SplitSeq(cidrs, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			a, aerr := netip.ParseAddr(strings.TrimSpace(c))
			if aerr != nil {
				return fmt.Errorf("role %s: %q is not a CIDR", name, c)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		r[name] = append(r[name], p.Masked())
	}
	return nil
}

func cmdImport(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("import", importUsage, stderr)
	from := fs.String("from", "", "the product: anf, squid or smokescreen (required)")
	roles := roleFlag{}
	fs.Var(roles, "role", "smokescreen: a role's addresses, NAME=CIDR[,CIDR] (repeatable)")
	outPath, opts := policyOutputFlags(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	fail := failer(stderr, "import")
	parsers := map[string]func(string, []byte) (*importer.Result, error){
		"anf":   importer.ANF,
		"squid": importer.Squid,
		"smokescreen": func(f string, d []byte) (*importer.Result, error) {
			return importer.Smokescreen(f, d, roles)
		},
	}
	parse, ok := parsers[*from]
	if !ok {
		fs.Usage()
		return fail("--from must be anf, squid or smokescreen, not %q", *from)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fail("give the files to translate")
	}
	o, err := opts()
	if err != nil {
		return fail("%v", err)
	}
	var results []*importer.Result
	for _, path := range fs.Args() {
		data, err := os.ReadFile(path)
		if err != nil {
			return fail("%v", err)
		}
		r, err := parse(path, data)
		if err != nil {
			return fail("%v", err)
		}
		results = append(results, r)
	}
	merged := importer.Merge(results...)
	text, notes, err := merged.Policy(o)
	if err != nil {
		return fail("%v", err)
	}
	if err := writeOutput(*outPath, stdout, text); err != nil {
		return fail("%v", err)
	}
	for _, n := range notes {
		fmt.Fprintln(stderr, n)
	}
	fmt.Fprintf(stderr, "egressd import: %d rules from %s; %d items listed above (not translated, or different in egressd)\n",
		strings.Count(string(text), "\n  - name: "), strings.Join(merged.Files, ", "), len(notes))
	return 0
}
