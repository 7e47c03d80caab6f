package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"

	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
	"github.com/egressd/egressd/pkg/replay"
	"github.com/egressd/egressd/pkg/suggest"
)

const suggestUsage = `Usage: egressd suggest [flags] LOG.jsonl|CAPTURE.pcap...

Write a policy that would allow what was observed: from decision logs (run
egressd in monitor mode for a week, then give it log.decisions_file and its
rotations) or captures (replayed as egressd would read them), one rule per
source subnet and set of ports, each domain with a comment (flows, sources,
first and last seen), and a test per rule. Review it before enforcing it.

Names are exact, unless --min-siblings or more observed names share a
parent: then ".parent" stands for them, never at or above a public suffix
(".com", ".github.io", ".amazonaws.com") and never for a name seen on a
port that carries no name. Flows with no name, an IP address for a name, or
a name that did not match its destination's DNS are not proposed: they are
listed at the end, for a person to decide (a cidrs rule, or nothing).

The proposal goes to stdout (or -o FILE), a summary to stderr. Replaying
the same logs against it allows every flow it proposes a rule for:
  egressd suggest week.jsonl > suggested.yaml
  egressd check suggested.yaml
  egressd replay --policy suggested.yaml week.jsonl

Exit status: 0 when every input was read, 2 on an error.

Flags:
`

func cmdSuggest(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("suggest", suggestUsage, stderr)
	var subnets listFlag
	fs.Var(&subnets, "subnet", "a source subnet to group by, CIDR (repeatable; the VPC's private subnets)")
	bits := fs.Int("group-bits", 24, "prefix length grouping an IPv4 source in no --subnet")
	siblings := fs.Int("min-siblings", 3, "observed names under one parent that justify \".parent\" (0: never)")
	outPath, opts := policyOutputFlags(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	fail := failer(stderr, "suggest")
	if fs.NArg() == 0 {
		fs.Usage()
		return fail("give one or more decision logs or captures")
	}
	o, err := opts()
	if err != nil {
		return fail("%v", err)
	}
	so := suggest.Options{GroupBits: *bits, MinSiblings: *siblings, Inspect: o}
	if *siblings == 0 {
		so.MinSiblings = -1
	}
	if *bits < 8 || *bits > 32 {
		return fail("--group-bits %d must be within 8..32", *bits)
	}
	for _, s := range subnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fail("--subnet %q is not a CIDR", s)
		}
		so.Subnets = append(so.Subnets, p.Masked())
	}
	b := suggest.NewBuilder(so)
	for _, path := range fs.Args() {
		if err := suggestFrom(b, path, o); err != nil {
			return fail("%s: %v", path, err)
		}
	}
	s := b.Result()
	var text bytes.Buffer
	if err := s.WriteYAML(&text); err != nil {
		return fail("%v", err)
	}
	if err := writeOutput(*outPath, stdout, text.Bytes()); err != nil {
		return fail("%v", err)
	}
	names := 0
	for _, r := range s.Rules {
		names += len(r.Entries)
	}
	fmt.Fprintf(stderr, "suggest: %d rules with %d domains from %d decision lines; %d destinations without a usable name listed for you to decide\n",
		len(s.Rules), names, s.Lines, len(s.Unnamed))
	return 0
}

// allowAll allows every flow of a capture, after reading its name: a rule
// with a name (that no flow has) makes the engine read every flow head,
// so that replay reports the name each one carried.
const allowAll = "version: 1\ndefault: allow\nrules:\n  - {name: read-every-name, domains: [egressd-suggest.invalid], action: deny}\n"

// suggestFrom feeds one input's decisions to b: a decision log's lines as
// they are, a capture's flows as replay decides them in monitor mode.
func suggestFrom(b *suggest.Builder, path string, o policy.Options) error {
	in, _, closeIn, err := openInput(path)
	if err != nil {
		return err
	}
	defer closeIn()
	format, r, err := replay.Detect(in)
	if err != nil {
		return err
	}
	if format == replay.FormatLog {
		return addLines(b, r)
	}
	pol, err := policy.Parse("(allow all)", []byte(allowAll), o)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := replay.Run(r, pw, pol, nil, replay.Options{Engine: engine.Config{Mode: engine.Monitor, InspectTCP: o.InspectTCP, InspectUDP: o.InspectUDP}})
		pw.CloseWithError(err)
		done <- err
	}()
	err = addLines(b, pr)
	pr.Close()
	if rerr := <-done; rerr != nil {
		return rerr
	}
	return err
}

// addLines feeds each decision line of r to b; other lines are skipped.
func addLines(b *suggest.Builder, r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		l, err := declog.Parse(sc.Bytes())
		if err != nil {
			continue
		}
		b.Add(&l.Record)
	}
	return sc.Err()
}
