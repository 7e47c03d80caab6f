package replay

import (
	"bufio"
	"fmt"
	"net/netip"

	"github.com/egressd/egressd/pkg/decide"
	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
)

// A decision log (the daemon's stdout, JSON lines) is replayed by deciding
// each recorded flow again, with the same procedure (pkg/decide) as the
// daemon and a capture's replay, from what its line says: addresses,
// ports, protocol, and what the flow's head gave (the name the daemon
// read, or the reason it could not read one). What a policy cannot change
// stands as recorded:
//
//   - reason incomplete, malformed, limit: the head would fail the same
//     way (and the daemon's limits are not the policy's), unless the new
//     policy decides the flow on its first packet, before reading the
//     head;
//   - not-tls-or-http: denied unless an address rule allows the
//     destination, as the engine decides it;
//   - what DNS said then of the name and the destination: dns_check
//     "verified" or "grace" puts the destination among the name's
//     answers, dns-mismatch puts it elsewhere, dns-error says DNS could
//     not say; on a port without a name, name_from "dns" puts the
//     destination among that name's answers. These matter only where the
//     new policy allows the flow by its name.
//
// Everything else DNS would have to say comes from --resolve, or the check
// is skipped.

// maxLogLine bounds one line of a decision log.
const maxLogLine = 1 << 20

func replayLog(br *bufio.Reader, o *output, pols []*policy.Policy, opts *Options, progress func(uint64)) error {
	sc := bufio.NewScanner(br)
	sc.Buffer(make([]byte, 0, 64<<10), maxLogLine)
	rd := redecider{
		inspect:  policy.Options{InspectTCP: opts.Engine.InspectTCP, InspectUDP: opts.Engine.InspectUDP},
		enforced: opts.Engine.Mode != engine.Monitor,
	}
	if opts.Resolve != nil {
		rd.static = &staticVerifier{answers: opts.Resolve, unresolved: o.sum.Unresolved}
	}
	o.enforced = rd.enforced
	var recs [2]declog.Record
	for sc.Scan() {
		o.sum.LogLines++
		l, err := declog.Parse(sc.Bytes())
		if err != nil || l.Undecided || !l.Src.Is4() || !l.Dst.Is4() || l.DstPort == 0 {
			// Operational log lines, blank lines, fold summaries,
			// replay's own undecided flows: not decisions.
			o.sum.LogSkipped++
			continue
		}
		for i, p := range pols {
			recs[i] = rd.decide(p, &l.Record)
		}
		if len(pols) == 1 {
			o.decision(&recs[0], "")
		} else {
			o.compare(&recs[0], &recs[1], "")
		}
		if o.sum.LogLines%4096 == 0 {
			progress(uint64(o.sum.LogLines))
		}
	}
	progress(uint64(o.sum.LogLines))
	if err := sc.Err(); err != nil {
		return fmt.Errorf("decision log line %d: %w", o.sum.LogLines+1, err)
	}
	return nil
}

type redecider struct {
	inspect  policy.Options
	static   *staticVerifier // --resolve; nil: DNS checks skipped
	enforced bool
	decider  decide.Decider
}

// decide decides a recorded flow again with p (see the comment at the top
// of this file).
func (rd *redecider) decide(p *policy.Policy, l *declog.Record) declog.Record {
	f := decide.Flow{Src: l.Src, Dst: l.Dst, Port: l.DstPort, Proto: l.Proto, Inspected: rd.inspect.Inspected(l.Proto, l.DstPort)}
	switch {
	case l.Verdict == policy.Deny && l.Reason == policy.ReasonIncomplete:
		f.Head = decide.Incomplete
	case l.Verdict == policy.Deny && l.Reason == policy.ReasonMalformed:
		f.Head = decide.Malformed
	case l.Verdict == policy.Deny && l.Reason == policy.ReasonLimit:
		f.Head = decide.Limit
	case l.Verdict == policy.Deny && l.Reason == policy.ReasonNotTLSOrHTTP:
		f.Head = decide.NotTLSOrHTTP
	default:
		f.Head = decide.Named
	}
	if l.NameFrom.Read() {
		f.Name, f.From, f.ECH = l.Name, l.NameFrom, l.ECH
	}
	dns := lineDNS{line: l, static: rd.static}
	o := rd.decider.Decide(p, &f, dns)
	if o.Verify {
		o = o.Resolve(dns.answer(f.Name))
		if o.Reason == policy.ReasonDNSMismatch && l.Reason == policy.ReasonDNSMismatch {
			o.DNS = decide.Evidence{AnswerAge: l.DNSAnswerAge, Addrs: l.DNSAddrs, Requeried: l.DNSRequeried}
		}
	}
	rec := declog.Record{
		Time: l.Time, Src: l.Src, SrcPort: l.SrcPort, Dst: l.Dst, DstPort: l.DstPort, Proto: l.Proto,
		Enforced: rd.enforced, Latency: l.Latency,
	}
	o.Fill(&rec)
	return rec
}

// lineDNS is what a decision line says of DNS, with --resolve for the
// rest (decide.DNS).
type lineDNS struct {
	line   *declog.Record
	static *staticVerifier
}

func (d lineDNS) Cached(name string, addr netip.Addr) decide.Answer {
	l := d.line
	if addr == l.Dst && name == l.Name && name != "" {
		switch {
		case l.NameFrom == declog.FromDNS:
			return decide.Match // the daemon matched the name by the destination's DNS answers
		case l.NameFrom.Read() && l.DNSCheck == declog.CheckVerified:
			return decide.Match // the daemon verified the name at the destination
		case l.NameFrom.Read() && l.DNSCheck == declog.CheckGrace:
			return decide.Grace
		case l.NameFrom.Read() && (l.Reason == policy.ReasonDNSMismatch || l.Reason == policy.ReasonDNSError):
			return 0 // the daemon found it elsewhere, or could not tell
		}
	}
	if d.static != nil && d.static.Contains(name, addr) {
		return decide.Match
	}
	return 0
}

// answer is DNS's answer for an allow that rests on name, which the line
// and --resolve did not settle in Contains.
func (d lineDNS) answer(name string) decide.Answer {
	l := d.line
	if name == l.Name && l.NameFrom.Read() {
		switch {
		case l.DNSCheck == declog.CheckGrace:
			return decide.Grace
		case l.Reason == policy.ReasonDNSMismatch:
			return decide.Mismatch
		case l.Reason == policy.ReasonDNSError:
			return decide.Error
		}
	}
	switch {
	case d.static == nil:
		return decide.Skipped
	case d.static.Contains(name, l.Dst):
		return decide.Match
	}
	if _, known := d.static.answers[name]; !known {
		d.static.noteUnresolved(name)
		return decide.Error
	}
	return decide.Mismatch
}
