package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/egressd/egressd/pkg/decide"
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
	cfgPath := fs.String("config", "", "the daemon's config file: read inspect_ports from it (and from EGRESSD_* variables)")
	opts := inspectFlags(fs, cfgPath)
	at := atFlag(fs)
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
	if err == nil {
		o.At, err = at()
	}
	if err != nil {
		return fail("%v", err)
	}
	f := decide.Flow{Head: decide.Named}
	if f.Src, err = netip.ParseAddr(*src); err != nil {
		return fail("--src %q is not an IP address", *src)
	}
	if f.Dst, err = netip.ParseAddr(*dst); err != nil {
		return fail("--dst %q is not an IP address", *dst)
	}
	f.Src, f.Dst = f.Src.Unmap(), f.Dst.Unmap()
	if *port > 65535 {
		return fail("--port %d is outside 1-65535", *port)
	}
	f.Port = uint16(*port)
	var ok bool
	if f.Proto, ok = policy.ParseProto(*protoS); !ok || f.Proto == policy.ProtoAny {
		return fail("--proto must be tcp or udp, not %q", *protoS)
	}
	f.Inspected = o.Inspected(f.Proto, f.Port)
	// explain asks no DNS: on a port without a name, --name is a name the
	// destination resolves from; on one with a name, what the flow carries.
	var dns explainDNS
	if *name != "" {
		n, err := policy.NormalizeName(*name)
		if err != nil {
			return fail("--name %q: %v", *name, err)
		}
		if f.Inspected {
			f.Name, f.From = n, nameFrom(*from, f.Proto, f.Port)
			if f.From == declog.FromNone {
				return fail("--name-from must be sni, host or quic, not %q", *from)
			}
		} else {
			dns = explainDNS{name: n, addr: f.Dst}
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
	var dec decide.Decider
	out := dec.Decide(p, &f, dns).Resolve(decide.NotChecked)
	rec := declog.Record{Time: time.Now(), Src: f.Src, Dst: f.Dst, DstPort: f.Port, Proto: f.Proto, Enforced: true}
	rec.Latency = time.Since(start)
	out.Fill(&rec)
	line := rec.AppendJSON(nil)
	if *verbose {
		q := policy.Query{Src: f.Src, Dst: f.Dst, Port: f.Port, Proto: f.Proto, Inspected: f.Inspected, Name: f.Name}
		if dns.name != "" {
			q.DNSNames = []string{dns.name}
		}
		considered, err := json.Marshal(p.Explain(q).Rules)
		if err != nil {
			return fail("%v", err)
		}
		line = append(line[:len(line)-2], `,"considered":`...)
		line = append(line, considered...)
		line = append(line, "}\n"...)
	}
	stdout.Write(line)
	if out.Verdict == policy.Allow {
		return 0
	}
	return 1
}

// explainDNS is what explain assumes of DNS: that --name, on a port that
// carries no name, resolves to --dst; nothing else.
type explainDNS struct {
	name string
	addr netip.Addr
}

func (d explainDNS) Cached(name string, addr netip.Addr) decide.Answer {
	if d.name != "" && name == d.name && addr == d.addr {
		return decide.Match
	}
	return 0
}

// nameFrom returns the decision log's name_from for a name on an inspected
// port: the flag's value, or the usual source for the protocol and port.
func nameFrom(flagValue string, proto policy.Proto, port uint16) declog.NameFrom {
	switch flagValue {
	case "sni":
		return declog.FromSNI
	case "host":
		return declog.FromHost
	case "quic":
		return declog.FromQUIC
	case "":
	default:
		return declog.FromNone
	}
	switch {
	case proto == policy.UDP:
		return declog.FromQUIC
	case port == 80:
		return declog.FromHost
	}
	return declog.FromSNI
}
