// Package declog is egressd's decision log: one JSON line per flow, the
// schema of design.md. The daemon, `egressd explain` and `egressd replay`
// all write their lines through Record.AppendJSON, and everything that
// reads a line back (replay, the lab, the tests) reads it with Parse, so
// the writers and the readers cannot drift apart.
package declog

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/egressd/egressd/pkg/policy"
)

// NameFrom says where a decision's name came from: the decision log's
// "name_from".
type NameFrom uint8

const (
	FromNone NameFrom = iota // the flow carried no name
	FromSNI                  // TLS ClientHello server_name over TCP
	FromQUIC                 // the server_name of a ClientHello in QUIC Initial packets
	FromHost                 // HTTP/1.x Host header
	FromDNS                  // a rule's literal name whose DNS answers hold the destination, on a port without a name
)

var nameFromNames = [...]string{FromNone: "none", FromSNI: "sni", FromQUIC: "quic", FromHost: "host", FromDNS: "dns"}

func (f NameFrom) String() string {
	if int(f) < len(nameFromNames) {
		return nameFromNames[f]
	}
	return fmt.Sprintf("unknown(%d)", uint8(f))
}

// Read reports whether the name was read from the flow itself (not
// inferred from DNS).
func (f NameFrom) Read() bool { return f == FromSNI || f == FromQUIC || f == FromHost }

// DNSCheck says how a decision's name was tied to its destination: the
// decision log's "dns_check". The zero value is not written.
type DNSCheck uint8

const (
	CheckNone       DNSCheck = iota // the decision did not rely on a name
	CheckVerified                   // the destination is among the name's DNS answers
	CheckGrace                      // it was, within verify_dns.grace of its TTL
	CheckTrusted                    // verify_dns is off: the name was taken on trust
	CheckNotChecked                 // explain: a daemon would have checked it
	CheckSkipped                    // replay without --resolve: not checked
)

var checkNames = [...]string{CheckNone: "", CheckVerified: "verified", CheckGrace: "grace", CheckTrusted: "trusted",
	CheckNotChecked: "not-checked", CheckSkipped: "skipped"}

func (c DNSCheck) String() string {
	if int(c) < len(checkNames) {
		return checkNames[c]
	}
	return fmt.Sprintf("unknown(%d)", uint8(c))
}

// Record is one flow's decision. Its fields are typed; they become text
// only in AppendJSON.
type Record struct {
	Time     time.Time
	Src      netip.Addr
	SrcPort  uint16 // "sport"; 0 is written as 0 (explain has no source port)
	Dst      netip.Addr
	DstPort  uint16 // "dport"
	Proto    policy.Proto
	Name     string // "" when the flow carried none
	NameFrom NameFrom
	// Undecided marks a line about a flow that got no decision (replay's
	// midstream and capture-ended flows): verdict, rule and reason are
	// then written empty.
	Undecided bool
	Verdict   policy.Verdict
	Enforced  bool   // false in monitor mode and for shadow rules
	Rule      string // the deciding rule, or "default"; "" when egressd denied before the policy
	Reason    policy.Reason
	Latency   time.Duration
	ECH       bool     // written only when true
	DNSCheck  DNSCheck // written only when set
	// On a dns-mismatch (written only then): what egressd knew of the
	// name's answers, "dns_answer_age_ms" (its newest answer's age),
	// "dns_addrs" (the addresses it held for the name) and
	// "dns_requeried" (whether it asked DNS again for this flow).
	DNSAnswerAge time.Duration
	DNSAddrs     int
	DNSRequeried bool
}

// Crosses reports whether the line is about a flow whose bytes the verdict
// lets through: allowed, or not enforced (monitor mode). Such a line is
// written before the verdict (Writer.Log).
func (r *Record) Crosses() bool {
	return !r.Undecided && (r.Verdict == policy.Allow || !r.Enforced)
}

// AppendJSON appends the record as one JSON object and a newline, fields in
// the schema's order. It allocates only when buf must grow.
func (r *Record) AppendJSON(buf []byte) []byte {
	buf = append(buf, `{"time":"`...)
	buf = r.Time.UTC().AppendFormat(buf, "2006-01-02T15:04:05.000Z07:00")
	buf = append(buf, `","src":"`...)
	buf = appendAddr(buf, r.Src)
	buf = append(buf, `","sport":`...)
	buf = strconv.AppendUint(buf, uint64(r.SrcPort), 10)
	buf = append(buf, `,"dst":"`...)
	buf = appendAddr(buf, r.Dst)
	buf = append(buf, `","dport":`...)
	buf = strconv.AppendUint(buf, uint64(r.DstPort), 10)
	buf = appendField(buf, "proto", r.Proto.String())
	buf = appendField(buf, "name", r.Name)
	buf = appendField(buf, "name_from", r.NameFrom.String())
	verdict, reason := r.Verdict.String(), r.Reason.String()
	if r.Undecided {
		verdict, reason = "", ""
	}
	buf = appendField(buf, "verdict", verdict)
	buf = append(buf, `,"enforced":`...)
	buf = strconv.AppendBool(buf, r.Enforced)
	buf = appendField(buf, "rule", r.Rule)
	buf = appendField(buf, "reason", reason)
	buf = append(buf, `,"latency_us":`...)
	buf = strconv.AppendInt(buf, r.Latency.Microseconds(), 10)
	if r.ECH {
		buf = append(buf, `,"ech":true`...)
	}
	if r.DNSCheck != CheckNone {
		buf = appendField(buf, "dns_check", r.DNSCheck.String())
	}
	if !r.Undecided && r.Reason == policy.ReasonDNSMismatch {
		buf = append(buf, `,"dns_answer_age_ms":`...)
		buf = strconv.AppendInt(buf, r.DNSAnswerAge.Milliseconds(), 10)
		buf = append(buf, `,"dns_addrs":`...)
		buf = strconv.AppendInt(buf, int64(r.DNSAddrs), 10)
		buf = append(buf, `,"dns_requeried":`...)
		buf = strconv.AppendBool(buf, r.DNSRequeried)
	}
	return append(buf, "}\n"...)
}

func appendAddr(buf []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return buf
	}
	return a.AppendTo(buf)
}

func appendField(buf []byte, key, val string) []byte {
	buf = append(buf, `,"`...)
	buf = append(buf, key...)
	buf = append(buf, `":`...)
	return AppendString(buf, val)
}

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string. Names come from the network
// and are validated before they get here, but the log must stay one valid
// line whatever it is given: control characters, quotes and invalid UTF-8
// are escaped.
func AppendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				buf = append(buf, '\\', c)
			case c < 0x20 || c == 0x7f:
				buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				buf = append(buf, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, `\ufffd`...)
		} else {
			buf = append(buf, s[i:i+size]...)
		}
		i += size
	}
	return append(buf, '"')
}
