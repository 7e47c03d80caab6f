package replay

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/internal/declogtest"
	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
)

// testdata/lab holds a recording of real clients through the daemon in the
// lab (test/replaylab, EGRESSD_RECORD=1): the capture of the NAT's private
// side, the daemon's decision lines, its policy and config, and the lab
// DNS's answers. Replaying the capture must give the daemon's lines, time
// and latency aside.

// labHelloTimeout is testdata/lab/egressd.yaml's hello.timeout.
const labHelloTimeout = time.Second

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// labAnswers reads testdata/lab/resolve.txt (NAME=IP lines).
func labAnswers(t testing.TB) Answers {
	t.Helper()
	var specs []string
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, "testdata/lab/resolve.txt")))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			specs = append(specs, l)
		}
	}
	a, err := ParseAnswers(specs...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func labPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.Load("testdata/lab/policy.yaml", policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func canonical(t testing.TB, b []byte) []string {
	t.Helper()
	c, err := declogtest.Canonical(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLabRecording(t *testing.T) {
	daemon := readFile(t, "testdata/lab/daemon.jsonl")
	opts := Options{Engine: engine.Config{HelloTimeout: labHelloTimeout}, Resolve: labAnswers(t)}
	for _, tc := range []struct {
		name, input string
	}{
		{"the capture gives the daemon's lines", "testdata/lab/capture.pcap"},
		// Deciding the daemon's own log again with its own policy changes
		// nothing: the log path keeps what the policy cannot change and
		// decides the rest the same way.
		{"the decision log, decided again, gives itself", "testdata/lab/daemon.jsonl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			sum, err := Run(bytes.NewReader(readFile(t, tc.input)), &out, labPolicy(t), nil, opts)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(canonical(t, daemon), canonical(t, out.Bytes())); diff != "" {
				t.Errorf("(-daemon +replay):\n%s", diff)
			}
			if sum.Flows != 13 || sum.Midstream != 0 || sum.CaptureEnded != 0 || sum.DNSSkipped != 0 {
				t.Errorf("summary %+v", sum)
			}
		})
	}
}

// TestLabRecordingWithoutResolve: without answers the same decisions come
// out, every name-based allow saying its check was skipped, and the flows
// that DNS decided (a mismatch, a name matched by address) decided
// without it.
func TestLabRecordingWithoutResolve(t *testing.T) {
	var out bytes.Buffer
	sum, err := Run(bytes.NewReader(readFile(t, "testdata/lab/capture.pcap")), &out, labPolicy(t), nil,
		Options{Engine: engine.Config{HelloTimeout: labHelloTimeout}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]line{}
	for _, l := range parseLines(t, out.Bytes()) {
		got[fmt.Sprintf("%s/%s/%d/%s", l.Dst, l.Proto, l.Dport, l.Reason)] = l
	}
	for key, w := range map[string]want{
		// The SNI that DNS did not tie to 203.0.113.11 is now allowed, on trust.
		"203.0.113.11/tcp/443/rule": {Name: "allowed.example.test", NameFrom: "sni", Verdict: "allow", Rule: "lab-web", DNSCheck: "skipped"},
		// Port 22 by name: no answers, no match.
		"203.0.113.10/tcp/22/default": {NameFrom: "none", Verdict: "deny", Rule: "default", DNSCheck: "skipped"},
	} {
		l, ok := got[key]
		if !ok {
			t.Errorf("no line %s in:\n%s", key, out.Bytes())
			continue
		}
		if l.Name != w.Name || l.NameFrom != w.NameFrom || l.Verdict != w.Verdict || l.Rule != w.Rule || l.DNSCheck != w.DNSCheck {
			t.Errorf("%s: %+v, want %+v", key, l, w)
		}
	}
	if sum.DNSSkipped == 0 {
		t.Errorf("summary counts no skipped checks: %+v", sum)
	}
}

// TestShadowRuleSameFromBothInputs: a shadow deny rule added to the lab's
// policy is reported the same way whether the flows come from the capture
// or from the daemon's decision log: the same procedure decides both.
// (A log line used to replay as the enforced allow, the capture as the
// shadow deny.)
func TestShadowRuleSameFromBothInputs(t *testing.T) {
	text := string(readFile(t, "testdata/lab/policy.yaml")) + `  - name: trial
    domains: [allowed.example.test, ssh.allowed.test]
    action: deny
    shadow: true
`
	pol := mustPolicy(t, text)
	opts := Options{Engine: engine.Config{HelloTimeout: labHelloTimeout}, Resolve: labAnswers(t)}
	var outs [2][]string
	for i, input := range []string{"testdata/lab/capture.pcap", "testdata/lab/daemon.jsonl"} {
		var out bytes.Buffer
		if _, err := Run(bytes.NewReader(readFile(t, input)), &out, pol, nil, opts); err != nil {
			t.Fatal(err)
		}
		outs[i] = canonical(t, out.Bytes())
	}
	if diff := cmp.Diff(outs[0], outs[1]); diff != "" {
		t.Errorf("(-capture +log):\n%s", diff)
	}
	shadowed := 0
	for _, l := range parseLines(t, []byte(strings.Join(outs[1], "\n"))) {
		if l.Rule == "trial" {
			shadowed++
			if l.Verdict != "deny" || l.Enforced {
				t.Errorf("a shadow rule's line: %+v", l)
			}
		}
	}
	if shadowed != 4 { // HTTPS, HTTP and QUIC to allowed.example.test; SSH by name
		t.Errorf("%d lines name the shadow rule, want 4:\n%s", shadowed, strings.Join(outs[1], "\n"))
	}
}
