// Package declog is egressd's decision log: one JSON line per flow, the
// schema of design.md. The daemon, `egressd explain` and `egressd replay`
// all write their lines through Record.AppendJSON, so the three cannot
// drift apart.
package declog

import (
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"
)

// Record is one flow's decision.
type Record struct {
	Time     time.Time
	Src      netip.Addr
	SrcPort  uint16 // "sport"; 0 is written as 0 (explain has no source port)
	Dst      netip.Addr
	DstPort  uint16 // "dport"
	Proto    string // tcp | udp
	Name     string // "" when the flow carried none
	NameFrom string // sni | quic | host | dns | none
	Verdict  string // allow | deny
	Enforced bool   // false in monitor mode and for shadow rules
	Rule     string // the deciding rule, or "default"; "" when the engine denied before the policy
	Reason   string // rule | default | dns-mismatch | dns-error | incomplete | malformed | not-tls-or-http | limit
	Latency  time.Duration
	ECH      bool // written only when true
	// DNSCheck says how the name was tied to the destination: "verified",
	// "trusted" (verify_dns disabled), "not-checked" (explain), "skipped"
	// (replay without --resolve); written only when set.
	DNSCheck string
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
	buf = appendField(buf, "proto", r.Proto)
	buf = appendField(buf, "name", r.Name)
	buf = appendField(buf, "name_from", r.NameFrom)
	buf = appendField(buf, "verdict", r.Verdict)
	buf = append(buf, `,"enforced":`...)
	buf = strconv.AppendBool(buf, r.Enforced)
	buf = appendField(buf, "rule", r.Rule)
	buf = appendField(buf, "reason", r.Reason)
	buf = append(buf, `,"latency_us":`...)
	buf = strconv.AppendInt(buf, r.Latency.Microseconds(), 10)
	if r.ECH {
		buf = append(buf, `,"ech":true`...)
	}
	if r.DNSCheck != "" {
		buf = appendField(buf, "dns_check", r.DNSCheck)
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
