package replay

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/pkg/engine"
)

// newLabPolicy changes testdata/lab/policy.yaml: allowed.example.test is no
// longer allowed, and lab-cidr takes in 203.0.113.11.
const newLabPolicy = `version: 1
default: deny
rules:
  - name: lab-api-only
    domains: [api.allowed.test]
    ports: [443, 80]
    action: allow
  - name: lab-deny
    domains: [denied.example.test]
    action: deny
  - name: lab-cidr
    cidrs: [203.0.113.20/32, 203.0.113.11/32]
    ports: [443, 22]
    action: allow
  - name: lab-ssh-by-name
    domains: [ssh.allowed.test]
    ports: [22]
    action: allow
`

// TestBaseline: the same changes come out of the capture and of the
// daemon's log, newly denied first, counted by deciding rule.
func TestBaseline(t *testing.T) {
	opts := Options{Engine: engine.Config{HelloTimeout: labHelloTimeout}, Resolve: labAnswers(t)}
	newPol := mustPolicy(t, newLabPolicy)
	type change struct {
		Dst, Proto, Verdict, Rule, Reason string
		Dport                             int
		WasVerdict, WasRule, WasReason    string
	}
	want := []change{
		{"203.0.113.10", "tcp", "deny", "default", "default", 443, "allow", "lab-web", "rule"},
		{"203.0.113.10", "tcp", "deny", "default", "default", 80, "allow", "lab-web", "rule"},
		{"203.0.113.10", "udp", "deny", "default", "default", 443, "allow", "lab-web", "rule"},
		// lab-cidr now takes in .11, but the flows there stay denied:
		// denied.example.test resolves to .11, and a deny rule meets a
		// flow by its DNS answers, before an address rule allows it, when
		// it carries no name (the bytes to UDP 443 that were not QUIC)
		// and when its name is false (allowed.example.test, which DNS puts
		// at .10): a lie never does better than silence.
	}
	for _, input := range []string{"testdata/lab/capture.pcap", "testdata/lab/daemon.jsonl"} {
		t.Run(input, func(t *testing.T) {
			var out bytes.Buffer
			sum, err := Run(bytes.NewReader(readFile(t, input)), &out, newPol, labPolicy(t), opts)
			if err != nil {
				t.Fatal(err)
			}
			var got []change
			for _, l := range parseLines(t, out.Bytes()) {
				if l.Baseline == nil {
					t.Fatalf("a line without its baseline: %+v", l)
				}
				got = append(got, change{l.Dst, l.Proto, l.Verdict, l.Rule, l.Reason, l.Dport, l.Baseline.Verdict, l.Baseline.Rule, l.Baseline.Reason})
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("changes (-want +got):\n%s", d)
			}
			ch := sum.Changes
			if ch == nil || ch.Compared != 13 || ch.Unchanged != 10 || ch.NewlyDenied != 3 || ch.NewlyAllowed != 0 || ch.NotCompared != 0 {
				t.Fatalf("changes: %+v", ch)
			}
			if d := cmp.Diff(map[string]int{"default": 3}, ch.DeniedBy); d != "" {
				t.Errorf("newly denied by rule (-want +got):\n%s", d)
			}
			if d := cmp.Diff(map[string]int{}, ch.AllowedBy); d != "" {
				t.Errorf("newly allowed by the baseline's rule (-want +got):\n%s", d)
			}
		})
	}
}

// TestBaselineSamePolicy: a policy against itself changes nothing.
func TestBaselineSamePolicy(t *testing.T) {
	var out bytes.Buffer
	sum, err := Run(bytes.NewReader(readFile(t, "testdata/lab/capture.pcap")), &out, labPolicy(t), labPolicy(t),
		Options{Engine: engine.Config{HelloTimeout: labHelloTimeout}, Resolve: labAnswers(t)})
	if err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 || sum.Changes.Unchanged != 13 {
		t.Errorf("output %q, changes %+v", out.String(), sum.Changes)
	}
}
