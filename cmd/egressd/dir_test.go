package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodDir = "../../pkg/policy/testdata/dir/good"

// TestCommandsTakeADirectory: check, explain and replay accept a policy
// directory, and report its problems as file:line of the file that has
// them.
func TestCommandsTakeADirectory(t *testing.T) {
	code, out, errOut := runCmd(t, "check", "--at", "2026-12-20T00:00:00Z", goodDir)
	if code != 0 || !strings.HasPrefix(out, goodDir+": ok: 4 rules (4 domains, 0 cidrs), default deny, 4 tests passed, sha256 ") ||
		!strings.Contains(out, goodDir+`/payments.yaml:9: note: rule "payments-vendor-incident" expires at 2026-12-24T06:00:00Z, in 4d 6h`) {
		t.Errorf("check of a directory: exit %d\n%s%s", code, out, errOut)
	}
	const bad = "../../pkg/policy/testdata/dir/bad/many-problems"
	code, out, _ = runCmd(t, "check", bad)
	if code != 1 || strings.Count(out, "\n") != 4 || !strings.Contains(out, bad+"/b.yaml:4: ") || !strings.Contains(out, bad+"/d.yaml:3: ") {
		t.Errorf("check of a bad directory: exit %d\n%s", code, out)
	}
	// A break-glass file whose rules have all expired is named as removable.
	if _, out, _ := runCmd(t, "check", "--at", "2027-01-01T00:00:00Z", goodDir); strings.Contains(out, "can be removed") {
		t.Errorf("a file with a rule still in force is named as removable:\n%s", out)
	}
	spent := t.TempDir()
	os.WriteFile(filepath.Join(spent, "base.yaml"), []byte("version: 1\ndefault: deny\nrules:\n  - {name: a, domains: [a.example], action: allow}\n"), 0o644)
	os.WriteFile(filepath.Join(spent, "break-glass-1.yaml"), []byte("version: 1\nrules:\n  - {name: bg, domains: [b.example], action: allow, expires: 2026-01-01T00:00:00Z}\n"), 0o644)
	if _, out, _ := runCmd(t, "check", spent); !strings.Contains(out, filepath.Join(spent, "break-glass-1.yaml")+": note: every rule of this file has expired; it can be removed") {
		t.Errorf("a spent break-glass file is not named:\n%s", out)
	}

	code, out, _ = runCmd(t, "explain", "--policy", goodDir, "--src", "10.0.2.7", "--dst", "203.0.113.10",
		"--port", "443", "--name", "api.stripe.com", "--verbose")
	if code != 0 || !strings.Contains(out, `"rule":"payments-stripe"`) ||
		!strings.Contains(out, `{"rule":"payments-stripe","file":"`+goodDir+`/payments.yaml","owner":"payments","line":4,`) {
		t.Errorf("explain with a directory: exit %d\n%s", code, out)
	}

	log := filepath.Join(t.TempDir(), "decisions.jsonl")
	os.WriteFile(log, []byte(`{"time":"2026-11-24T10:00:00.123Z","src":"10.0.2.7","sport":51234,"dst":"203.0.113.10","dport":443,"proto":"tcp","name":"api.stripe.com","name_from":"sni","verdict":"deny","enforced":false,"rule":"default","reason":"default","latency_us":41}
{"time":"2026-11-24T10:00:01.123Z","src":"10.0.1.7","sport":51235,"dst":"203.0.113.11","dport":443,"proto":"tcp","name":"api.github.com","name_from":"sni","verdict":"deny","enforced":false,"rule":"default","reason":"default","latency_us":41}
`), 0o644)
	base := filepath.Join(t.TempDir(), "old.yaml")
	os.WriteFile(base, []byte("version: 1\ndefault: deny\nrules:\n  - {name: ci-github, from: [10.0.1.0/24], domains: [.github.com], ports: [443], action: allow}\n"), 0o644)
	code, out, errOut = runCmd(t, "replay", "--policy", goodDir, "--baseline", base, log)
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"rule":"payments-stripe"`) || !strings.Contains(errOut, "1 newly allowed") {
		t.Errorf("replay of a directory against a file: exit %d\n%s%s", code, out, errOut)
	}
}
