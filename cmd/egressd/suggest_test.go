package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/pkg/declog"
)

// logLine is a monitor-mode decision line.
func logLine(src, dst string, port int, proto, name, from string) string {
	return fmt.Sprintf(`{"time":"2026-11-24T10:00:00.000Z","src":%q,"sport":40000,"dst":%q,"dport":%d,"proto":%q,"name":%q,"name_from":%q,"verdict":"deny","enforced":false,"rule":"default","reason":"default","latency_us":20}`+"\n",
		src, dst, port, proto, name, from)
}

// TestSuggestRoundTrip: a policy suggested from a week of monitor-mode
// lines passes check; replaying the same lines against it allows every
// flow it proposes a rule for (the others are listed in it); a log of
// unrelated names is denied.
func TestSuggestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	var week strings.Builder
	for i, n := range []string{"github.com", "api.github.com", "codeload.github.com", "uploads.github.com", "objects.githubusercontent.com", "raw.githubusercontent.com",
		"a.s3.amazonaws.com", "b.s3.amazonaws.com", "c.s3.amazonaws.com", "sts.amazonaws.com", "registry.npmjs.org"} {
		week.WriteString(logLine(fmt.Sprintf("10.0.1.%d", 7+i%3), fmt.Sprintf("203.0.113.%d", 10+i), 443, "tcp", n, "sni"))
	}
	week.WriteString(logLine("10.0.1.7", "203.0.113.30", 443, "udp", "www.google.com", "quic"))
	week.WriteString(logLine("10.0.1.7", "203.0.113.10", 22, "tcp", "github.com", "dns"))
	week.WriteString(logLine("10.0.2.5", "203.0.113.40", 80, "tcp", "deb.debian.org", "host"))
	named := strings.Count(week.String(), "\n")
	week.WriteString(logLine("10.0.2.5", "203.0.113.41", 80, "tcp", "203.0.113.41", "host"))
	week.WriteString(logLine("10.0.3.4", "198.51.100.5", 22, "tcp", "", "none"))
	week.WriteString(`{"time":"2026-11-24T10:00:00Z","level":"INFO","msg":"an operational line"}` + "\n")
	logPath := filepath.Join(dir, "week.jsonl")
	os.WriteFile(logPath, []byte(week.String()), 0o644)

	code, yaml, errOut := runCmd(t, "suggest", logPath)
	if code != 0 || !strings.Contains(errOut, "suggest: 3 rules with 11 domains from 16 decision lines; 2 destinations without a usable name") {
		t.Fatalf("suggest: exit %d\n%s\n%s", code, errOut, yaml)
	}
	sugg := filepath.Join(dir, "suggested.yaml")
	os.WriteFile(sugg, []byte(yaml), 0o644)
	if code, out, _ := runCmd(t, "check", sugg); code != 0 {
		t.Fatalf("check of the suggestion: exit %d\n%s\n%s", code, out, yaml)
	}
	if !strings.Contains(yaml, "- .github.com ") || strings.Contains(yaml, "- .githubusercontent.com") || strings.Contains(yaml, "- .s3.amazonaws.com") {
		t.Errorf("suffixes:\n%s", yaml)
	}

	code, out, errOut := runCmd(t, "replay", "--policy", sugg, logPath)
	if code != 0 {
		t.Fatalf("replay: exit %d\n%s", code, errOut)
	}
	allowed, denied := verdicts(t, out)
	if len(allowed) != named || len(denied) != 2 || !strings.Contains(strings.Join(denied, " "), "198.51.100.5:22") {
		t.Errorf("replay of the observed lines: %d allowed (want %d), denied %v\n%s", len(allowed), named, denied, yaml)
	}

	var other strings.Builder
	for i, n := range []string{"gist.githubusercontent.com", "d.s3.amazonaws.com", "ssm.amazonaws.com", "pastebin.com", "www.npmjs.org", "evil.example.net"} {
		other.WriteString(logLine("10.0.1.7", fmt.Sprintf("203.0.113.%d", 60+i), 443, "tcp", n, "sni"))
	}
	other.WriteString(logLine("10.0.9.9", "203.0.113.11", 443, "tcp", "api.github.com", "sni")) // another subnet
	heldOut := filepath.Join(dir, "other.jsonl")
	os.WriteFile(heldOut, []byte(other.String()), 0o644)
	_, out, _ = runCmd(t, "replay", "--policy", sugg, heldOut)
	if allowed, denied := verdicts(t, out); len(allowed) != 0 || len(denied) != 7 {
		t.Errorf("replay of unrelated names: allowed %v", allowed)
	}
}

// verdicts splits replay's lines into allowed and denied flows.
func verdicts(t *testing.T, out string) (allowed, denied []string) {
	t.Helper()
	for line := range strings.Lines(out) {
		l, err := declog.Parse([]byte(line))
		if err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		flow := fmt.Sprintf("%s->%s:%d %s", l.Src, l.Dst, l.DstPort, l.Name)
		if l.Verdict.String() == "allow" {
			allowed = append(allowed, flow)
		} else {
			denied = append(denied, flow)
		}
	}
	return allowed, denied
}

// TestSuggestFromCapture: a capture is read as replay reads it, and the
// suggestion allows the capture's named flows.
func TestSuggestFromCapture(t *testing.T) {
	code, yaml, errOut := runCmd(t, "suggest", "--subnet", "198.18.1.0/24", labData+"capture.pcap")
	if code != 0 || !strings.Contains(yaml, "from: [198.18.1.0/24]") || !strings.Contains(yaml, "allowed.example.test") {
		t.Fatalf("suggest from a capture: exit %d\n%s\n%s", code, errOut, yaml)
	}
	sugg := filepath.Join(t.TempDir(), "s.yaml")
	os.WriteFile(sugg, []byte(yaml), 0o644)
	if code, out, _ := runCmd(t, "check", sugg); code != 0 {
		t.Fatalf("check: %s\n%s", out, yaml)
	}
	_, out, _ := runCmd(t, "replay", "--policy", sugg, labData+"capture.pcap")
	for line := range strings.Lines(out) {
		l, err := declog.Parse([]byte(line))
		if err != nil || l.Undecided {
			continue
		}
		if l.NameFrom.Read() && l.Name != "" && l.Verdict.String() != "allow" && l.Reason.String() == "default" {
			t.Errorf("a named flow of the capture is not allowed: %s", line)
		}
	}
	if code, _, errOut := runCmd(t, "suggest", "/nonexistent.jsonl"); code != 2 || !strings.Contains(errOut, "/nonexistent.jsonl") {
		t.Errorf("a missing input: exit %d %s", code, errOut)
	}
}
