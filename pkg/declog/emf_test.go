package declog

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/internal/testenv"
	"github.com/egressd/egressd/pkg/policy"
)

// TestEMFLines: every interval, a line of decisions and denials without
// dimensions and one per reason and rule, in CloudWatch's Embedded Metric
// Format; no address anywhere; read back by Parse as no decision.
func TestEMFLines(t *testing.T) {
	e := newEMF(EMFConfig{MaxPairs: 3})
	rec := func(v policy.Verdict, reason policy.Reason, rule string) *Record {
		return &Record{Src: netip.MustParseAddr("10.0.1.7"), Dst: netip.MustParseAddr("203.0.113.9"), DstPort: 443,
			Proto: policy.TCP, Verdict: v, Reason: reason, Rule: rule}
	}
	for range 3 {
		e.count(rec(policy.Allow, policy.ReasonRule, "github"))
	}
	e.count(rec(policy.Deny, policy.ReasonDefault, "default"))
	e.count(rec(policy.Deny, policy.ReasonDefault, "default"))
	e.count(rec(policy.Deny, policy.ReasonRule, "no-paste"))
	e.count(rec(policy.Deny, policy.ReasonIncomplete, ""))
	e.count(rec(policy.Deny, policy.ReasonDNSMismatch, "github")) // past MaxPairs
	e.count(&Record{Undecided: true})
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	out := e.lines(now)
	want := `{"_aws":{"Timestamp":1796119200000,"CloudWatchMetrics":[{"Namespace":"egressd","Dimensions":[[]],"Metrics":[{"Name":"Decisions","Unit":"Count"},{"Name":"Denials","Unit":"Count"}]}]},"Decisions":8,"Denials":5}
{"_aws":{"Timestamp":1796119200000,"CloudWatchMetrics":[{"Namespace":"egressd","Dimensions":[["Reason","Rule"],["Reason"]],"Metrics":[{"Name":"Denials","Unit":"Count"}]}]},"Reason":"rule","Rule":"no-paste","Denials":1}
{"_aws":{"Timestamp":1796119200000,"CloudWatchMetrics":[{"Namespace":"egressd","Dimensions":[["Reason","Rule"],["Reason"]],"Metrics":[{"Name":"Denials","Unit":"Count"}]}]},"Reason":"default","Rule":"default","Denials":2}
{"_aws":{"Timestamp":1796119200000,"CloudWatchMetrics":[{"Namespace":"egressd","Dimensions":[["Reason","Rule"],["Reason"]],"Metrics":[{"Name":"Denials","Unit":"Count"}]}]},"Reason":"dns-mismatch","Rule":"(other)","Denials":1}
{"_aws":{"Timestamp":1796119200000,"CloudWatchMetrics":[{"Namespace":"egressd","Dimensions":[["Reason","Rule"],["Reason"]],"Metrics":[{"Name":"Denials","Unit":"Count"}]}]},"Reason":"incomplete","Rule":"(none)","Denials":1}
`
	if diff := cmp.Diff(want, string(out)); diff != "" {
		t.Errorf("EMF lines (-want +got):\n%s", diff)
	}
	for line := range strings.Lines(string(out)) {
		if !json.Valid([]byte(line)) || strings.Contains(line, "10.0.1.7") || strings.Contains(line, "203.0.113.9") {
			t.Errorf("not JSON, or an address in it: %s", line)
		}
		if _, err := Parse([]byte(line)); !errors.Is(err, ErrNotDecision) {
			t.Errorf("Parse of an EMF line: %v", err)
		}
	}
	if next := e.lines(now); !strings.HasSuffix(string(next), `"Decisions":0,"Denials":0}`+"\n") || strings.Count(string(next), "\n") != 1 {
		t.Errorf("an interval without decisions: %s", next)
	}
}

// TestWriterEMF: the writer adds the EMF lines to its outputs, folded
// denials counted too.
func TestWriterEMF(t *testing.T) {
	var out testenv.Buffer
	w := NewWriter(WriterConfig{Outputs: []io.Writer{&out}, FoldRate: 1, FoldBurst: 1, EMF: &EMFConfig{Interval: 50 * time.Millisecond}})
	ctx, cancel := context.WithCancel(context.Background())
	go w.Run(ctx)
	for range 5 {
		w.Log(&Record{Time: time.Now(), Src: netip.MustParseAddr("10.0.1.7"), Dst: netip.MustParseAddr("203.0.113.9"),
			DstPort: 443, Proto: policy.TCP, Verdict: policy.Deny, Reason: policy.ReasonDefault, Rule: "default"})
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), `"Decisions":5,"Denials":5}`) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	w.Wait()
	got := out.String()
	if !strings.Contains(got, `"Decisions":5,"Denials":5}`) || !strings.Contains(got, `"Reason":"default","Rule":"default","Denials":5}`) {
		t.Errorf("the writer's EMF lines:\n%s", got)
	}
	if c := w.Counts(); c.Written+c.Folded != 5 {
		t.Errorf("decision lines counted %+v; the EMF lines are not decision lines", c)
	}
}
