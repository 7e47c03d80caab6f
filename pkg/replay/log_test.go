package replay

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// logLineFor writes a decision line as the daemon would, for fields that
// matter here.
func logLineFor(dst string, dport int, proto, name, from, verdict, rule, reason, check string) string {
	l := fmt.Sprintf(`{"time":"2026-11-24T10:00:00.123Z","src":"10.0.1.7","sport":51234,"dst":%q,"dport":%d,"proto":%q,"name":%q,"name_from":%q,"verdict":%q,"enforced":true,"rule":%q,"reason":%q,"latency_us":41`,
		dst, dport, proto, name, from, verdict, rule, reason)
	if check != "" {
		l += fmt.Sprintf(`,"dns_check":%q`, check)
	}
	return l + "}"
}

// TestRedecide covers each kind of recorded line against policies that
// change, or cannot change, its decision.
func TestRedecide(t *testing.T) {
	// No rule with domains applies to port 443: flows there are decided on
	// their first packet.
	const cidrPolicy = `
version: 1
default: deny
rules:
  - {name: cidr-allow, cidrs: [203.0.113.0/24], ports: [443], action: allow}
  - {name: web, domains: [allowed.example.test], ports: [80], action: allow}
`
	const noWebPolicy = `
version: 1
default: deny
rules:
  - {name: blocked, domains: [allowed.example.test], ports: [443], action: deny}
`
	for _, tc := range []struct {
		name, policy, line string
		opts               Options
		want               want
	}{
		{"limit is the daemon's, kept while the name matters", testPolicy,
			logLineFor("203.0.113.10", 443, "tcp", "", "none", "deny", "", "limit", ""), Options{},
			want{Dst: "203.0.113.10", Dport: 443, NameFrom: "none", Verdict: "deny", Reason: "limit"}},
		{"limit, but a CIDR rule now decides on the SYN, before any limit", cidrPolicy,
			logLineFor("203.0.113.10", 443, "tcp", "", "none", "deny", "", "limit", ""), Options{},
			want{Dst: "203.0.113.10", Dport: 443, NameFrom: "none", Verdict: "allow", Rule: "cidr-allow", Reason: "rule"}},
		{"incomplete stays incomplete while the name matters", testPolicy,
			logLineFor("203.0.113.10", 443, "tcp", "", "none", "deny", "", "incomplete", ""), Options{},
			want{Dst: "203.0.113.10", Dport: 443, NameFrom: "none", Verdict: "deny", Reason: "incomplete"}},
		{"incomplete, but a CIDR rule now decides on the SYN", cidrPolicy,
			logLineFor("203.0.113.10", 443, "tcp", "", "none", "deny", "", "incomplete", ""), Options{},
			want{Dst: "203.0.113.10", Dport: 443, NameFrom: "none", Verdict: "allow", Rule: "cidr-allow", Reason: "rule"}},
		{"malformed, and no rule with domains for the port: decided on the SYN", noWebPolicy,
			logLineFor("203.0.113.10", 80, "tcp", "", "none", "deny", "", "malformed", ""), Options{},
			want{Dst: "203.0.113.10", Dport: 80, NameFrom: "none", Verdict: "deny", Rule: "default", Reason: "default"}},
		{"not TLS, allowed by an address rule", testPolicy,
			logLineFor("198.51.100.9", 443, "tcp", "", "none", "deny", "", "not-tls-or-http", ""), Options{},
			want{Dst: "198.51.100.9", Dport: 443, NameFrom: "none", Verdict: "allow", Rule: "partner", Reason: "rule"}},
		{"a verified name stays verified", testPolicy,
			logLineFor("203.0.113.10", 443, "tcp", "allowed.example.test", "sni", "allow", "web", "rule", "verified"),
			Options{Resolve: Answers{}},
			want{Dst: "203.0.113.10", Dport: 443, Name: "allowed.example.test", NameFrom: "sni", Verdict: "allow", Rule: "web", Reason: "rule", DNSCheck: "verified"}},
		{"a recorded mismatch of a name still allowed", testPolicy,
			logLineFor("203.0.113.11", 443, "tcp", "allowed.example.test", "sni", "deny", "", "dns-mismatch", ""), Options{},
			want{Dst: "203.0.113.11", Dport: 443, Name: "allowed.example.test", NameFrom: "sni", Verdict: "deny", Reason: "dns-mismatch"}},
		{"a recorded mismatch of a name now denied by rule", noWebPolicy,
			logLineFor("203.0.113.11", 443, "tcp", "allowed.example.test", "sni", "deny", "", "dns-mismatch", ""), Options{},
			want{Dst: "203.0.113.11", Dport: 443, Name: "allowed.example.test", NameFrom: "sni", Verdict: "deny", Rule: "blocked", Reason: "rule"}},
		{"a name never checked, now allowed: skipped without --resolve", testPolicy,
			logLineFor("203.0.113.10", 443, "tcp", "x.api.example.test", "sni", "deny", "default", "default", ""), Options{},
			want{Dst: "203.0.113.10", Dport: 443, Name: "x.api.example.test", NameFrom: "sni", Verdict: "allow", Rule: "web", Reason: "rule", DNSCheck: "skipped"}},
		{"... verified by --resolve", testPolicy,
			logLineFor("203.0.113.10", 443, "tcp", "x.api.example.test", "sni", "deny", "default", "default", ""),
			Options{Resolve: Answers{"x.api.example.test": {server}}},
			want{Dst: "203.0.113.10", Dport: 443, Name: "x.api.example.test", NameFrom: "sni", Verdict: "allow", Rule: "web", Reason: "rule", DNSCheck: "verified"}},
		{"... elsewhere by --resolve: dns-mismatch", testPolicy,
			logLineFor("203.0.113.10", 443, "tcp", "x.api.example.test", "sni", "deny", "default", "default", ""),
			Options{Resolve: Answers{"x.api.example.test": {other}}},
			want{Dst: "203.0.113.10", Dport: 443, Name: "x.api.example.test", NameFrom: "sni", Verdict: "deny", Reason: "dns-mismatch"}},
		{"... unknown to --resolve: dns-error", testPolicy,
			logLineFor("203.0.113.10", 443, "tcp", "x.api.example.test", "sni", "deny", "default", "default", ""),
			Options{Resolve: Answers{"other.example.test": {other}}},
			want{Dst: "203.0.113.10", Dport: 443, Name: "x.api.example.test", NameFrom: "sni", Verdict: "deny", Reason: "dns-error"}},
		{"a name matched by DNS on port 22 keeps matching", testPolicy,
			logLineFor("203.0.113.10", 22, "tcp", "git.example.test", "dns", "allow", "ssh-by-name", "rule", "verified"), Options{Resolve: Answers{}},
			want{Dst: "203.0.113.10", Dport: 22, Name: "git.example.test", NameFrom: "dns", Verdict: "allow", Rule: "ssh-by-name", Reason: "rule", DNSCheck: "verified"}},
		{"port 22 by DNS, from --resolve", testPolicy,
			logLineFor("203.0.113.10", 22, "tcp", "", "none", "deny", "default", "default", ""),
			Options{Resolve: Answers{"git.example.test": {server}}},
			want{Dst: "203.0.113.10", Dport: 22, Name: "git.example.test", NameFrom: "dns", Verdict: "allow", Rule: "ssh-by-name", Reason: "rule", DNSCheck: "verified"}},
		{"QUIC", testPolicy,
			logLineFor("203.0.113.10", 443, "udp", "denied.example.test", "quic", "allow", "x", "rule", "verified"), Options{},
			want{Dst: "203.0.113.10", Dport: 443, Name: "denied.example.test", NameFrom: "quic", Verdict: "deny", Rule: "blocked", Reason: "rule"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines, _ := replayBytes(t, []byte(tc.line+"\n"), mustPolicy(t, tc.policy), nil, tc.opts)
			if d := cmp.Diff([]want{tc.want}, brief(lines)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// TestLogNotDecisions: lines that are not decisions are skipped and
// counted, and a flow's time and latency are kept.
func TestLogNotDecisions(t *testing.T) {
	in := strings.Join([]string{
		"",
		`{"time":"2026-11-24T10:00:00Z","level":"INFO","msg":"egressd running"}`,
		`{"src":"10.0.1.7","dst":"203.0.113.10","dport":443,"proto":"tcp","verdict":"","replay":"midstream"}`,
		`{not json`,
		`{"src":"10.0.1.7","dst":"2001:db8::1","dport":443,"proto":"tcp","verdict":"allow"}`,
		logLineFor("198.51.100.9", 22, "tcp", "", "none", "allow", "partner", "rule", ""),
	}, "\n")
	var out bytes.Buffer
	sum, err := Run(strings.NewReader(in), &out, mustPolicy(t, testPolicy), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	lines := parseLines(t, out.Bytes())
	if sum.Format != FormatLog || sum.LogLines != 6 || sum.LogSkipped != 5 || len(lines) != 1 {
		t.Fatalf("summary %+v, lines %+v", sum, lines)
	}
	if l := lines[0]; l.LatencyUS != 41 || l.Time.UnixMilli()%1000 != 123 || l.Verdict != "allow" || l.Sport != 51234 {
		t.Errorf("line %+v", l)
	}
}
