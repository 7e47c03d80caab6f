package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/internal/declogtest"
	"github.com/egressd/egressd/pkg/replay"
)

// The lab recording pkg/replay's tests use: real clients through the
// daemon, its capture and its decision lines.
const labData = "../../pkg/replay/testdata/lab/"

func TestReplayCommand(t *testing.T) {
	daemon, err := os.ReadFile(labData + "daemon.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	want, err := declogtest.Canonical(daemon)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"flags", []string{"--policy", labData + "policy.yaml", "--hello-timeout", "1s", "--resolve", "@" + labData + "resolve.txt", labData + "capture.pcap"}},
		{"the daemon's config", []string{"--config", labData + "egressd.yaml", "--policy", labData + "policy.yaml", "--resolve", "@" + labData + "resolve.txt", labData + "capture.pcap"}},
		{"the daemon's log", []string{"--policy", labData + "policy.yaml", "--resolve", "@" + labData + "resolve.txt", labData + "daemon.jsonl"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, append([]string{"replay"}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d, stderr:\n%s", code, errOut)
			}
			got, err := declogtest.Canonical([]byte(out))
			if err != nil {
				t.Fatalf("stdout is not decision lines: %v\n%s", err, out)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("(-daemon +replay):\n%s", d)
			}
			// The comparison leaves latency out: hello.timeout (1s in the
			// recording, from the flag or the config) shows in the
			// incomplete flow's.
			for line := range strings.Lines(out) {
				var l struct {
					Reason    string
					LatencyUS int64 `json:"latency_us"`
				}
				if json.Unmarshal([]byte(line), &l); l.Reason == "incomplete" && (l.LatencyUS < 1e6 || l.LatencyUS > 1.2e6) {
					t.Errorf("incomplete after %dus; hello.timeout was 1s", l.LatencyUS)
				}
			}
			if !strings.HasPrefix(errOut, "replay: 13 flows from ") || !strings.Contains(errOut, "6 allowed, 7 denied") {
				t.Errorf("summary:\n%s", errOut)
			}
		})
	}
}

func TestReplayBaselineCommand(t *testing.T) {
	// The new policy: the lab's without its rule for allowed.example.test.
	pol, err := os.ReadFile(labData + "policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	newPol := filepath.Join(t.TempDir(), "new.yaml")
	text := strings.Replace(string(pol), "domains: [allowed.example.test, api.allowed.test]", "domains: [api.allowed.test]", 1)
	if err := os.WriteFile(newPol, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd(t, "replay", "--policy", newPol, "--baseline", labData+"policy.yaml",
		"--hello-timeout", "1s", "--resolve", "@"+labData+"resolve.txt", labData+"capture.pcap")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if n := strings.Count(out, "\n"); n != 3 || strings.Count(out, `"verdict":"deny"`) != 3 || strings.Count(out, `"baseline":{"name":"allowed.example.test"`) != 3 {
		t.Errorf("want the three flows to allowed.example.test, newly denied:\n%s", out)
	}
	for _, s := range []string{"13 flows compared", "3 newly denied, 0 newly allowed, 10 unchanged", "newly denied, by the new policy's deciding rule:\n         3  default\n"} {
		if !strings.Contains(errOut, s) {
			t.Errorf("summary lacks %q:\n%s", s, errOut)
		}
	}
}

func TestReplayUsage(t *testing.T) {
	pol := labData + "policy.yaml"
	cap := labData + "capture.pcap"
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"help", []string{"--help"}, 0, "Test a policy against traffic already seen"},
		{"no input", []string{"--policy", pol}, 2, "give exactly one capture or decision log"},
		{"no policy", []string{cap}, 2, "--policy is required"},
		{"a bad policy", []string{"--policy", "../../pkg/policy/testdata/bad/38-many-problems.yaml", cap}, 2, "38-many-problems.yaml:"},
		{"a bad --resolve", []string{"--policy", pol, "--resolve", "a.example=not-an-ip", cap}, 2, "is not an IPv4 address"},
		{"an IPv6 --resolve", []string{"--policy", pol, "--resolve", "a.example=2001:db8::1", cap}, 2, "is not an IPv4 address"},
		{"a bad --mode", []string{"--policy", pol, "--mode", "audit", cap}, 2, "mode must be enforce or monitor"},
		{"a bad --hello-timeout", []string{"--policy", pol, "--hello-timeout", "1ms", cap}, 2, "must be within 100ms..1m"},
		{"a missing input", []string{"--policy", pol, "/nonexistent.pcap"}, 2, "no such file"},
		{"an input of another kind", []string{"--policy", pol, pol}, 2, "not a pcap or pcapng capture, nor a decision log"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, append([]string{"replay"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.stderr) {
				t.Errorf("exit %d (want %d), stderr lacks %q:\n%s", code, tc.code, tc.stderr, errOut)
			}
			if out != "" {
				t.Errorf("stdout: %q", out)
			}
		})
	}
}

// TestProgressLine: one line, rewritten in place, at most twice a second.
func TestProgressLine(t *testing.T) {
	var b strings.Builder
	p := newProgress(&b, 200<<20)
	p(replay.Progress{Bytes: 50 << 20, Flows: 7})
	p(replay.Progress{Bytes: 60 << 20, Flows: 8}) // within 500ms: not written
	out := b.String()
	if !strings.HasPrefix(out, "\r\033[Kreplay: 50.0 MiB of 200.0 MiB (25%), 7 flows, ") || strings.Count(out, "\r") != 1 || strings.Contains(out, "\n") {
		t.Errorf("progress output %q", out)
	}
	if isTerminal(&b) {
		t.Error("a strings.Builder is a terminal")
	}
}
