package replay

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/nfq"
	"github.com/egressd/egressd/pkg/policy"
)

// A decision log (the daemon's stdout, JSON lines) is replayed by deciding
// each recorded flow again from what its line says: addresses, ports,
// protocol, and the name the daemon read. What a policy cannot change is
// kept as recorded:
//
//   - reason limit: a limit of the daemon's (flow table, held packets,
//     hello bytes), not of the policy;
//   - incomplete, malformed: the flow head would fail the same way, unless
//     the new policy decides the flow on its first packet, before reading
//     the head (a CIDR rule, or no rule with domains for the port);
//   - not-tls-or-http: denied unless an address rule allows the
//     destination, exactly as the engine decides it;
//   - dns-mismatch, dns-error, and dns_check "verified": what DNS said of
//     this name and destination then. They matter only when the new
//     policy allows the flow by its name.
//
// A flow the daemon never had to verify (it denied it, or took names on
// trust) is verified against --resolve, or its check is skipped. On a
// port without a name, the recorded name_from "dns" says the destination
// was among that name's answers; the policy's other names match through
// --resolve only.

// logLine is the part of a decision line replay reads.
type logLine struct {
	Time      time.Time `json:"time"`
	Src       string    `json:"src"`
	Sport     uint16    `json:"sport"`
	Dst       string    `json:"dst"`
	Dport     uint16    `json:"dport"`
	Proto     string    `json:"proto"`
	Name      string    `json:"name"`
	NameFrom  string    `json:"name_from"`
	Verdict   string    `json:"verdict"`
	Rule      string    `json:"rule"`
	Reason    string    `json:"reason"`
	LatencyUS int64     `json:"latency_us"`
	ECH       bool      `json:"ech"`
	DNSCheck  string    `json:"dns_check"`
}

// maxLogLine bounds one line of a decision log.
const maxLogLine = 1 << 20

func replayLog(br *bufio.Reader, o *output, pols []*policy.Policy, opts *Options, progress func(uint64)) error {
	sc := bufio.NewScanner(br)
	sc.Buffer(make([]byte, 0, 64<<10), maxLogLine)
	var v *staticVerifier
	if opts.Resolve != nil {
		v = &staticVerifier{answers: opts.Resolve, unresolved: o.sum.Unresolved}
	}
	rd := redecider{
		inspect:  policy.Options{InspectTCP: opts.Engine.InspectTCP, InspectUDP: opts.Engine.InspectUDP},
		verifier: v,
		enforced: opts.Engine.Mode != nfq.Monitor,
	}
	o.enforced = rd.enforced
	var recs [2]declog.Record
	for sc.Scan() {
		o.sum.LogLines++
		var l logLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || !rd.valid(&l) {
			// Operational log lines, blank lines, replay's own
			// undecided flows: not decisions.
			o.sum.LogSkipped++
			continue
		}
		for i, p := range pols {
			recs[i] = rd.decide(p, &l)
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
	verifier *staticVerifier // nil: DNS checks skipped
	enforced bool
	src, dst netip.Addr
	proto    policy.Proto
}

// valid parses the line's flow; a line without one is not a decision.
func (rd *redecider) valid(l *logLine) bool {
	var err1, err2 error
	rd.src, err1 = netip.ParseAddr(l.Src)
	rd.dst, err2 = netip.ParseAddr(l.Dst)
	var ok bool
	rd.proto, ok = policy.ParseProto(l.Proto)
	return err1 == nil && err2 == nil && rd.src.Is4() && rd.dst.Is4() && ok && rd.proto != policy.ProtoAny &&
		l.Dport != 0 && (l.Verdict == "allow" || l.Verdict == "deny")
}

// decide decides a recorded flow again with p (see the comment at the top
// of this file).
// namesOfDst appends to names the policy's literal names that --resolve
// puts at the flow's destination, leaving out skip (already in names).
func (rd *redecider) namesOfDst(p *policy.Policy, names []string, skip string) []string {
	if rd.verifier == nil {
		return names
	}
	for _, n := range p.LiteralNames() {
		if n != skip && rd.verifier.Contains(n, rd.dst) {
			names = append(names, n)
		}
	}
	return names
}

func (rd *redecider) decide(p *policy.Policy, l *logLine) declog.Record {
	rec := declog.Record{
		Time: l.Time, Src: rd.src, SrcPort: l.Sport, Dst: rd.dst, DstPort: l.Dport, Proto: l.Proto,
		NameFrom: "none", Enforced: rd.enforced, Latency: time.Duration(l.LatencyUS) * time.Microsecond, ECH: l.ECH,
	}
	kept := func() declog.Record {
		rec.Verdict, rec.Rule, rec.Reason = l.Verdict, l.Rule, l.Reason
		rec.Name, rec.NameFrom, rec.DNSCheck = l.Name, l.NameFrom, l.DNSCheck
		return rec
	}
	engineDeny := func(reason policy.Reason) declog.Record {
		rec.Verdict, rec.Rule, rec.Reason, rec.DNSCheck = "deny", "", reason.String(), ""
		if l.NameFrom == "sni" || l.NameFrom == "quic" || l.NameFrom == "host" {
			rec.Name, rec.NameFrom = l.Name, l.NameFrom
		}
		return rec
	}
	if l.Reason == policy.ReasonLimit.String() {
		return kept()
	}
	q := policy.Query{Src: rd.src, Dst: rd.dst, Port: l.Dport, Proto: rd.proto, Inspected: rd.inspect.Inspected(rd.proto, l.Dport)}
	if !q.Inspected {
		if l.NameFrom == "dns" && l.Name != "" {
			q.DNSNames = append(q.DNSNames, l.Name)
		}
		q.DNSNames = rd.namesOfDst(p, q.DNSNames, l.Name)
		d := p.Decide(q)
		fill(&rec, d)
		if rd.verifier == nil && d.DNSName == "" && dnsMatters(p, &rec) {
			rec.DNSCheck = "skipped"
		}
		return rec
	}
	pq := q
	pq.Pending = true
	if d := p.Decide(pq); d.Final {
		fill(&rec, d) // decided on the first packet: the head is not read
		return rec
	}
	switch l.Reason {
	case policy.ReasonIncomplete.String():
		return engineDeny(policy.ReasonIncomplete)
	case policy.ReasonMalformed.String():
		return engineDeny(policy.ReasonMalformed)
	case policy.ReasonNotTLSOrHTTP.String():
		// As the engine: deny rules meet the nameless flow by address.
		q.DNSNames = rd.namesOfDst(p, nil, "")
		if d := p.Decide(q); d.Verdict == policy.Allow && d.Reason == policy.ReasonRule {
			fill(&rec, d)
			return rec
		}
		return engineDeny(policy.ReasonNotTLSOrHTTP)
	}
	if l.NameFrom == "sni" || l.NameFrom == "quic" || l.NameFrom == "host" {
		q.Name = l.Name
		rec.Name, rec.NameFrom = l.Name, l.NameFrom
	}
	if q.Name == "" {
		q.DNSNames = rd.namesOfDst(p, nil, "") // deny rules meet a nameless flow by address
	}
	d := p.Decide(q)
	fill(&rec, d)
	if d.Verdict != policy.Allow || !d.Verify {
		return rec
	}
	// An allow that relies on the name: tie it to the destination.
	switch {
	case l.DNSCheck == "verified":
		rec.DNSCheck = "verified"
	case l.Reason == policy.ReasonDNSMismatch.String():
		return engineDeny(policy.ReasonDNSMismatch)
	case l.Reason == policy.ReasonDNSError.String():
		return engineDeny(policy.ReasonDNSError)
	case rd.verifier == nil:
		rec.DNSCheck = "skipped"
	case rd.verifier.Contains(q.Name, rd.dst):
		rec.DNSCheck = "verified"
	default:
		if _, known := rd.verifier.answers[q.Name]; !known {
			rd.verifier.noteUnresolved(q.Name)
			return engineDeny(policy.ReasonDNSError)
		}
		return engineDeny(policy.ReasonDNSMismatch)
	}
	return rec
}

// fill sets a line's decision from the policy's, as the engine does.
func fill(rec *declog.Record, d policy.Decision) {
	rec.Verdict, rec.Rule, rec.Reason = d.Verdict.String(), d.Rule, d.Reason.String()
	if d.DNSName != "" {
		rec.Name, rec.NameFrom, rec.DNSCheck = d.DNSName, "dns", "verified"
	}
}
