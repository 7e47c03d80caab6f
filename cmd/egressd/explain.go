package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

const explainUsage = `Usage: egressd explain --policy FILE --src IP --dst IP --port N [--proto tcp|udp] [--name NAME] [--verbose]

Decide one flow with a policy, without running anything, and print the
decision as one JSON line of the decision log (verdict, rule, reason,
name_from). --verbose adds "considered": every rule, whether it matched, and
why or why not.

--name is the name the flow carries: the TLS SNI or HTTP Host on a port that
carries one (see --inspect-tcp/--inspect-udp), or, on any other port, a name
the destination is assumed to resolve from. explain does not query DNS: a
decision that relies on the name says "dns_check":"not-checked", and the
daemon would also require --dst to be among the name's DNS answers.

Exit status: 0 when the flow is allowed, 1 when it is denied, 2 on an error.

Example:
  egressd explain --policy examples/policy.yaml --src 10.0.1.7 \
      --dst 140.82.112.3 --port 443 --name github.com --verbose

Flags:
`

func cmdExplain(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("explain", explainUsage, stderr)
	file := fs.String("policy", "", "policy file (required)")
	src := fs.String("src", "", "source (client) address (required)")
	dst := fs.String("dst", "", "destination address (required)")
	port := fs.Uint("port", 0, "destination port (required)")
	protoS := fs.String("proto", "tcp", "tcp or udp")
	name := fs.String("name", "", "the name the flow carries (SNI, QUIC SNI or HTTP Host)")
	from := fs.String("name-from", "", "where the name comes from: sni, host or quic (default: quic for udp, host for tcp/80, else sni)")
	verbose := fs.Bool("verbose", false, "list every rule considered and why it did or did not match")
	opts := inspectFlags(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "egressd explain: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q (every input is a flag; see --help)", fs.Arg(0))
	}
	if *file == "" || *src == "" || *dst == "" || *port == 0 {
		fs.Usage()
		return fail("--policy, --src, --dst and --port are required")
	}
	o, err := opts()
	if err != nil {
		return fail("%v", err)
	}
	q := policy.Query{}
	if q.Src, err = netip.ParseAddr(*src); err != nil {
		return fail("--src %q is not an IP address", *src)
	}
	if q.Dst, err = netip.ParseAddr(*dst); err != nil {
		return fail("--dst %q is not an IP address", *dst)
	}
	q.Src, q.Dst = q.Src.Unmap(), q.Dst.Unmap()
	if *port > 65535 {
		return fail("--port %d is outside 1-65535", *port)
	}
	q.Port = uint16(*port)
	var ok bool
	if q.Proto, ok = policy.ParseProto(*protoS); !ok || q.Proto == policy.ProtoAny {
		return fail("--proto must be tcp or udp, not %q", *protoS)
	}
	q.Inspected = o.Inspected(q.Proto, q.Port)
	rec := declog.Record{
		Time: time.Now(), Src: q.Src, Dst: q.Dst, DstPort: q.Port,
		Proto: q.Proto.String(), NameFrom: "none", Enforced: true,
	}
	if *name != "" {
		n, err := policy.NormalizeName(*name)
		if err != nil {
			return fail("--name %q: %v", *name, err)
		}
		rec.Name = n
		if q.Inspected {
			q.Name = n
			rec.NameFrom = nameFrom(*from, q.Proto, q.Port)
			if rec.NameFrom == "" {
				return fail("--name-from must be sni, host or quic, not %q", *from)
			}
		} else {
			q.DNSNames = []string{n}
		}
	}
	p, err := policy.Load(*file, o)
	if err != nil {
		for _, e := range policy.AsList(err) {
			fmt.Fprintln(stderr, e)
		}
		return 2
	}
	start := time.Now()
	var ex policy.Explanation
	if *verbose {
		ex = p.Explain(q)
	} else {
		ex.Decision = p.Decide(q)
	}
	d := ex.Decision
	rec.Latency = time.Since(start)
	rec.Verdict, rec.Rule, rec.Reason = d.Verdict.String(), d.Rule, d.Reason.String()
	switch {
	case d.DNSName != "":
		rec.Name, rec.NameFrom, rec.DNSCheck = d.DNSName, "dns", "not-checked"
	case !q.Inspected:
		// The flow carries no name, and none of the rule's names matched
		// by address.
		rec.Name, rec.NameFrom = "", "none"
	case d.Verify:
		rec.DNSCheck = "not-checked"
	}
	line := rec.AppendJSON(nil)
	if *verbose {
		considered, err := json.Marshal(ex.Rules)
		if err != nil {
			return fail("%v", err)
		}
		line = append(line[:len(line)-2], `,"considered":`...)
		line = append(line, considered...)
		line = append(line, "}\n"...)
	}
	stdout.Write(line)
	if d.Verdict == policy.Allow {
		return 0
	}
	return 1
}

// nameFrom returns the decision log's name_from for a name on an inspected
// port: the flag's value, or the usual source for the protocol and port.
func nameFrom(flagValue string, proto policy.Proto, port uint16) string {
	switch flagValue {
	case "sni", "host", "quic":
		return flagValue
	case "":
	default:
		return ""
	}
	switch {
	case proto == policy.UDP:
		return "quic"
	case port == 80:
		return "host"
	}
	return "sni"
}
