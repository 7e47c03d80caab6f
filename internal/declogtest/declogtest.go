// Package declogtest reads decision logs in tests: a line in the schema's
// words (Parse, over declog.Parse), and whole logs compared, the daemon's
// lines against replay's for the same traffic (Canonical).
package declogtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/egressd/egressd/pkg/declog"
)

// Canonical returns a decision log's lines without the fields that differ
// between two runs over the same traffic ("time", "latency_us", and what
// DNS knew on a mismatch: "dns_answer_age_ms", "dns_addrs",
// "dns_requeried"), each
// re-encoded with its keys sorted, the lines sorted: two logs of the same
// decisions, in whatever order, give the same list.
func Canonical(log []byte) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("line %d: %w: %s", n, err, sc.Bytes())
		}
		for _, k := range []string{"time", "latency_us", "dns_answer_age_ms", "dns_addrs", "dns_requeried"} {
			delete(m, k)
		}
		b, err := json.Marshal(m) // map keys come out sorted
		if err != nil {
			return nil, err
		}
		out = append(out, string(b))
	}
	slices.Sort(out)
	return out, sc.Err()
}

// Words is a decision line read with declog.Parse (strictly), its fields
// in the words the line spells them with: what tests compare against the
// schema. Baseline is set on replay --baseline's lines.
type Words struct {
	Raw       string
	Record    declog.Record
	Time      time.Time
	Src       string
	Sport     int
	Dst       string
	Dport     int
	Proto     string
	Name      string
	NameFrom  string
	Verdict   string // "" on replay's lines for flows it could not decide
	Enforced  bool
	Rule      string
	Reason    string
	LatencyUS int64
	ECH       bool
	DNSCheck  string
	Replay    string
	Baseline  *Words
}

// Parse reads one decision line (or replay's line for an undecided flow)
// into Words; a fold summary or anything else is an error.
func Parse(line []byte) (Words, error) {
	l, err := declog.Parse(line)
	if err != nil {
		return Words{}, err
	}
	if l.Folded > 0 {
		return Words{}, declog.ErrNotDecision
	}
	w := words(&l.Record)
	w.Raw, w.Replay = string(line), l.Replay
	if l.Baseline != nil {
		b := words(l.Baseline)
		w.Baseline = &b
	}
	return w, nil
}

func words(r *declog.Record) Words {
	w := Words{
		Record: *r, Time: r.Time, Src: addr(r.Src), Sport: int(r.SrcPort), Dst: addr(r.Dst), Dport: int(r.DstPort),
		Proto: r.Proto.String(), Name: r.Name, NameFrom: r.NameFrom.String(), Enforced: r.Enforced, Rule: r.Rule,
		LatencyUS: r.Latency.Microseconds(), ECH: r.ECH, DNSCheck: r.DNSCheck.String(),
	}
	if !r.Undecided {
		w.Verdict, w.Reason = r.Verdict.String(), r.Reason.String()
	}
	return w
}

func addr(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// String is the line as written.
func (w Words) String() string { return w.Raw }
