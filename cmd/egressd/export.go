package main

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/egressd/egressd/pkg/policy"
)

const exportUsage = `Usage: egressd export --format route53-dns-firewall [--list allow|deny] POLICY

Write the policy's names in another system's format, to stdout (or -o FILE).

  --format route53-dns-firewall
      A Route 53 Resolver DNS Firewall domain list, one domain a line, in its
      wildcard syntax: "example.com" for the name, "*.example.com" for the
      names under it (".example.com" is both lines). Hosts ask the VPC
      resolver directly, never through the NAT, so DNS tunnelling to any zone
      is invisible to egressd; a DNS Firewall rule group that allows this
      list (and the AWS names a VPC needs) and blocks the rest closes it:
      deploy/terraform's dns_firewall_* variables apply it.

--list allow (the default) writes the names of the allow rules in force;
--list deny those of the deny rules (for a policy whose default is allow).
Shadow and expired rules are left out. The DNS Firewall applies to the whole
VPC: a rule's from: and ports do not carry over, so a name allowed to one
subnet resolves for all. Names it cannot hold (an "_" label) are named on
stderr; their queries would be blocked.

Exit status: 0 written, 1 nothing to write (a default allow with --list
allow), 2 on an error.

Flags:
`

// dnsFirewallDomain is what a DNS Firewall domain list takes: an optional
// leading "*.", then labels of letters, digits and hyphens.
var dnsFirewallDomain = regexp.MustCompile(`^(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$`)

func cmdExport(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("export", exportUsage, stderr)
	format := fs.String("format", "", "the output format: route53-dns-firewall (required)")
	list := fs.String("list", "allow", "allow: the names of the allow rules; deny: those of the deny rules")
	outPath, opts := policyOutputFlags(fs)
	at := atFlag(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	fail := failer(stderr, "export")
	if *format != "route53-dns-firewall" {
		fs.Usage()
		return fail("--format must be route53-dns-firewall, not %q", *format)
	}
	verdict, ok := policy.ParseVerdict(*list)
	if !ok {
		return fail("--list must be allow or deny, not %q", *list)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fail("give exactly one policy (a file or a directory)")
	}
	o, err := opts()
	if err == nil {
		o.At, err = at()
	}
	if err != nil {
		return fail("%v", err)
	}
	p, err := policy.Load(fs.Arg(0), o)
	if err != nil {
		for _, e := range policy.AsList(err) {
			fmt.Fprintln(stderr, e)
		}
		return 2
	}
	if verdict == policy.Allow && p.Default() == policy.Allow {
		fmt.Fprintf(stderr, "egressd export: %s allows every name by default, so a DNS Firewall would have to allow every name too; export its deny rules with --list deny\n", fs.Arg(0))
		return 1
	}
	var lines []string
	for _, n := range p.Patterns(verdict) {
		if n.Self {
			lines = append(lines, n.Name)
		}
		if n.Under {
			lines = append(lines, "*."+n.Name)
		}
	}
	slices.Sort(lines)
	lines = slices.Compact(lines)
	var b strings.Builder
	for _, l := range lines {
		if !dnsFirewallDomain.MatchString(l) || len(l) > 255 {
			fmt.Fprintf(stderr, "egressd export: %s cannot be in a DNS Firewall domain list (letters, digits and hyphens only): its queries will not match the list\n", l)
			continue
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	if err := writeOutput(*outPath, stdout, []byte(b.String())); err != nil {
		return fail("%v", err)
	}
	fmt.Fprintf(stderr, "egressd export: %d domains of the %s rules of %s (sha256 %s)\n", strings.Count(b.String(), "\n"), verdict, fs.Arg(0), p.Hash())
	return 0
}
