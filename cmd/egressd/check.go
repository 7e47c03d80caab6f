package main

import (
	"fmt"
	"io"

	"github.com/egressd/egressd/pkg/policy"
)

const checkUsage = `Usage: egressd check [flags] POLICY.yaml

Validate a policy file and run its tests: block.

Every problem is printed as "file:line: message" (all of them, not only the
first), and the exit status is 1. A good policy prints a one-line summary and
exits 0. Problems include YAML syntax, unknown or repeated keys, duplicate
rule names, bad CIDRs, ports outside 1-65535, rules without domains or
cidrs, misplaced wildcards, IP addresses in domains, wildcards that cover a
whole public suffix (".com", "*.github.io"; allowed only with
allow_public_suffix: true on the rule), and tests whose flow does not get the
expected verdict.

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
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "egressd check: give exactly one policy file")
		fs.Usage()
		return 2
	}
	o, err := opts()
	if err != nil {
		fmt.Fprintln(stderr, "egressd check:", err)
		return 2
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
