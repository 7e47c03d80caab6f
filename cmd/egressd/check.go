package main

import (
	"fmt"
	"io"
	"time"

	"github.com/egressd/egressd/pkg/policy"
	"github.com/egressd/egressd/pkg/sources"
)

const checkUsage = `Usage: egressd check [flags] POLICY.yaml|POLICY-DIR

Validate a policy file and run its tests: block.

Every problem is printed as "file:line: message" (all of them, not only the
first), and the exit status is 1. A good policy prints a one-line summary and
exits 0. Problems include YAML syntax, unknown or repeated keys, duplicate
rule names, bad CIDRs, ports outside 1-65535, rules without domains or
cidrs, misplaced wildcards, IP addresses in domains, wildcards that cover a
whole public suffix (".com", "*.github.io"; allowed only with
allow_public_suffix: true on the rule), and tests whose flow does not get the
expected verdict.

POLICY may be a directory: every *.yaml file in it (not hidden, not in a
subdirectory) is one file of the policy, e.g. one per team. Rule names are
unique across the files, exactly one of them sets the default, each file's
tests run against the whole, and the summary's sha256 is the directory's
(that of "sha256sum *.yaml" run in it).

Workload selectors in from (security_groups, tags) are resolved on the
instance; check says what each resolves to in the instance's last answers
(sources.cache_file of --config), and warns of one that selects nothing:
its rule matches no source from it.

Rules with expires are reported too: those that have expired (no longer in
force; remove them) and those that expire within 7 days. --at judges expiry
at another instant than now.

The ports that carry a name change what a rule means (on other ports its
domains match by DNS address): give the daemon's config with --config, or its
inspect_ports with --inspect-tcp/--inspect-udp, when they differ from the
defaults. With --config, check also prints the config's worst-case memory,
every limit full, part by part, against the memory egressd would be given on
this machine (GOMEMLIMIT, or the cgroup's memory.max, or half the RAM; limits
left at 0 are chosen from it as the daemon does), and exits 1 when it does not
fit.

Flags:
`

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", checkUsage, stderr)
	cfgPath := fs.String("config", "", "the daemon's config file: read inspect_ports from it (and from EGRESSD_* variables)")
	opts := inspectFlags(fs, cfgPath)
	at := atFlag(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "egressd check: give exactly one policy file")
		fs.Usage()
		return 2
	}
	o, err := opts()
	if err == nil {
		o.At, err = at()
	}
	if err != nil {
		fmt.Fprintln(stderr, "egressd check:", err)
		return 2
	}
	var cache *sources.Resolver
	if *cfgPath != "" {
		if cfg, err := loadConfig(*cfgPath); err == nil && cfg.Sources.CacheFile != "" {
			cache = sources.New(sources.Config{CacheFile: cfg.Sources.CacheFile})
			o.Sources = cache
		}
	}
	file := fs.Arg(0)
	p, err := policy.Load(file, o)
	if err != nil {
		for _, e := range policy.AsList(err) {
			fmt.Fprintln(stdout, e)
		}
		return 1
	}
	if fails := p.RunTests(); len(fails) > 0 {
		for _, e := range fails {
			fmt.Fprintln(stdout, e)
		}
		fmt.Fprintf(stdout, "%s: %d of %d tests failed\n", file, len(fails), p.Stats().Tests)
		return 1
	}
	s := p.Stats()
	fmt.Fprintf(stdout, "%s: ok: %d rules (%d domains, %d cidrs), default %s, %d tests passed, sha256 %s\n",
		file, s.Rules, s.Domains, s.CIDRs, p.Default(), s.Tests, p.Hash())
	printExpiries(stdout, p)
	printSelectors(stdout, p, cache)
	if *cfgPath != "" {
		return checkConfigMemory(*cfgPath, stdout)
	}
	return 0
}

// checkConfigMemory prints the config's worst-case memory, every limit
// full, against what egressd would be given here (GOMEMLIMIT, or this
// process's cgroup, or half the RAM), and fails when it does not fit.
func checkConfigMemory(path string, stdout io.Writer) int {
	cfg, err := loadConfig(path)
	if err != nil {
		fmt.Fprintln(stdout, err)
		return 1
	}
	mem, err := memoryGiven()
	if err != nil {
		fmt.Fprintln(stdout, "memory:", err)
		return 1
	}
	cfg.autoLimits(mem)
	cfg.printMemory(stdout, mem)
	if err := cfg.checkMemory(mem); err != nil {
		fmt.Fprintf(stdout, "%s: %v\n", path, err)
		return 1
	}
	return 0
}

// expirySoon is how far ahead check warns of rules about to expire.
const expirySoon = 7 * 24 * time.Hour

// printExpiries says which rules have expired and which expire soon, each
// as file:line: message.
func printExpiries(w io.Writer, p *policy.Policy) {
	for _, e := range p.Expired() {
		fmt.Fprintf(w, "%s:%d: warning: rule %q expired at %s and is not in force; remove it\n",
			e.File, e.Line, e.Rule, e.Expires.Format(time.RFC3339))
	}
	for _, f := range p.SpentFiles() {
		fmt.Fprintf(w, "%s: note: every rule of this file has expired; it can be removed\n", f)
	}
	for _, e := range p.Expiring(expirySoon) {
		fmt.Fprintf(w, "%s:%d: note: rule %q expires at %s, in %s\n",
			e.File, e.Line, e.Rule, e.Expires.Format(time.RFC3339), roughDuration(e.Expires.Sub(p.AsOf())))
	}
}

// roughDuration writes d in days, hours and minutes ("2d 3h", "45m").
func roughDuration(d time.Duration) string {
	d = d.Round(time.Minute)
	days, hours, mins := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour), int(d%time.Hour/time.Minute)
	switch {
	case days > 0:
		return fmt.Sprintf("%dd %dh", days, hours)
	case hours > 0:
		return fmt.Sprintf("%dh %dm", hours, mins)
	}
	return fmt.Sprintf("%dm", mins)
}

// printSelectors says what each workload selector resolves to: in the
// daemon's last answers (cache), or that it is resolved on the instance.
func printSelectors(w io.Writer, p *policy.Policy, cache *sources.Resolver) {
	for _, u := range p.SelectorUses() {
		head := fmt.Sprintf("%s:%d: ", u.File, u.Line)
		var a sources.Answer
		ok := false
		if cache != nil {
			a, ok = cache.Answer(u.Selector)
		}
		switch {
		case !ok:
			fmt.Fprintf(w, "%snote: rule %q: from %s is resolved on the instance (EC2 DescribeNetworkInterfaces); here it matches no source (give --config for the instance's last answers)\n", head, u.Rule, u.Selector)
		case len(a.Addresses) == 0:
			fmt.Fprintf(w, "%swarning: rule %q: from %s selects no network interface (EC2's answer of %s), so it matches no source\n", head, u.Rule, u.Selector, a.At.Format(time.RFC3339))
		default:
			fmt.Fprintf(w, "%snote: rule %q: from %s resolves to %d addresses (EC2's answer of %s)\n", head, u.Rule, u.Selector, len(a.Addresses), a.At.Format(time.RFC3339))
		}
	}
}
