package declog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/egressd/egressd/pkg/policy"
)

// ErrNotDecision is what Parse returns for a line that is JSON but not a
// decision line (an operational log line, a fold summary, replay's line
// for a flow it could not decide).
var ErrNotDecision = errors.New("not a decision line")

// Line is a decision line read back: the Record, and the fields of the
// other lines that share the log (a fold summary, replay's own fields).
type Line struct {
	Record
	Folded   uint64    // a fold summary: how many denied flows of Src it stands for
	Since    time.Time // a fold summary: from when
	Replay   string    // replay's "replay" field
	Baseline *Record   // replay --baseline: the baseline's decision (name, name_from, verdict, rule, reason)
}

// wireLine is a line as JSON carries it.
type wireLine struct {
	Time      time.Time `json:"time"`
	Src       string    `json:"src"`
	Sport     uint16    `json:"sport"`
	Dst       string    `json:"dst"`
	Dport     uint16    `json:"dport"`
	Proto     string    `json:"proto"`
	Name      string    `json:"name"`
	NameFrom  string    `json:"name_from"`
	Verdict   string    `json:"verdict"`
	Enforced  bool      `json:"enforced"`
	Rule      string    `json:"rule"`
	Reason    string    `json:"reason"`
	LatencyUS int64     `json:"latency_us"`
	ECH       bool      `json:"ech"`
	DNSCheck  string    `json:"dns_check"`
	AnswerAge int64     `json:"dns_answer_age_ms"`
	DNSAddrs  int       `json:"dns_addrs"`
	Requeried bool      `json:"dns_requeried"`
	Folded    uint64    `json:"folded"`
	Since     time.Time `json:"since"`
	Replay    string    `json:"replay"`
	Baseline  *struct {
		Name     string `json:"name"`
		NameFrom string `json:"name_from"`
		Verdict  string `json:"verdict"`
		Rule     string `json:"rule"`
		Reason   string `json:"reason"`
	} `json:"baseline"`
}

// Parse reads one line of the decision log. A decision line (verdict
// allow or deny, the flow's addresses, ports and protocol) comes back with
// its Record filled in; a fold summary with Folded set and Undecided; a
// line of replay's own for a flow without a decision with Undecided and
// Replay. Any other JSON object is ErrNotDecision; a line that is not
// JSON, a decision line with a field the schema does not have, or one
// whose fields do not parse is an error that says which field.
func Parse(b []byte) (Line, error) {
	var w wireLine
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		// Unknown fields make a line that is no decision (an
		// operational log line) or a broken one.
		if lerr := json.Unmarshal(b, &w); lerr != nil {
			return Line{}, lerr
		}
		if w.Verdict == "" && w.Replay == "" && w.Folded == 0 {
			return Line{}, ErrNotDecision
		}
		return Line{}, err
	}
	if dec.More() {
		return Line{}, errors.New("more than one JSON value on the line")
	}
	var l Line
	l.Time, l.Name, l.Enforced, l.Rule, l.ECH = w.Time, w.Name, w.Enforced, w.Rule, w.ECH
	l.SrcPort, l.DstPort, l.Latency = w.Sport, w.Dport, time.Duration(w.LatencyUS)*time.Microsecond
	l.Folded, l.Since, l.Replay = w.Folded, w.Since, w.Replay
	l.DNSAnswerAge, l.DNSAddrs, l.DNSRequeried = time.Duration(w.AnswerAge)*time.Millisecond, w.DNSAddrs, w.Requeried
	if w.Verdict == "" && w.Replay == "" && w.Folded == 0 {
		return Line{}, ErrNotDecision
	}
	var err error
	if l.Src, err = parseAddr("src", w.Src); err != nil {
		return Line{}, err
	}
	if w.Folded > 0 {
		l.Undecided = true
		return l, nil
	}
	if l.Dst, err = parseAddr("dst", w.Dst); err != nil {
		return Line{}, err
	}
	var ok bool
	if l.Proto, ok = policy.ParseProto(w.Proto); !ok || l.Proto == policy.ProtoAny {
		return Line{}, fmt.Errorf("proto %q is not tcp or udp", w.Proto)
	}
	if l.NameFrom, ok = ParseNameFrom(w.NameFrom); !ok {
		return Line{}, fmt.Errorf("name_from %q is not one of none, sni, quic, host, dns", w.NameFrom)
	}
	if l.DNSCheck, ok = ParseDNSCheck(w.DNSCheck); !ok {
		return Line{}, fmt.Errorf("dns_check %q is unknown", w.DNSCheck)
	}
	if w.Verdict == "" {
		l.Undecided = true
		return l, nil
	}
	if l.Verdict, ok = policy.ParseVerdict(w.Verdict); !ok {
		return Line{}, fmt.Errorf("verdict %q is not allow or deny", w.Verdict)
	}
	if l.Reason, ok = policy.ParseReason(w.Reason); !ok {
		return Line{}, fmt.Errorf("reason %q is unknown", w.Reason)
	}
	if b := w.Baseline; b != nil {
		base := Record{Name: b.Name}
		v, okv := policy.ParseVerdict(b.Verdict)
		r, okr := policy.ParseReason(b.Reason)
		nf, okn := ParseNameFrom(b.NameFrom)
		if !okv || !okr || !okn {
			return Line{}, fmt.Errorf("baseline: %q %q %q", b.Verdict, b.Reason, b.NameFrom)
		}
		base.Verdict, base.Reason, base.NameFrom, base.Rule = v, r, nf, b.Rule
		l.Baseline = &base
	}
	return l, nil
}

func parseAddr(field, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s %q is not an IP address", field, s)
	}
	return a, nil
}

// ParseNameFrom reads a name_from value.
func ParseNameFrom(s string) (NameFrom, bool) {
	for i, n := range nameFromNames {
		if n == s {
			return NameFrom(i), true
		}
	}
	return FromNone, false
}

// ParseDNSCheck reads a dns_check value ("" is CheckNone).
func ParseDNSCheck(s string) (DNSCheck, bool) {
	for i, n := range checkNames {
		if n == s {
			return DNSCheck(i), true
		}
	}
	return CheckNone, false
}
