package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestCheck(t *testing.T) {
	code, out, _ := runCmd(t, "check", "../../examples/policy.yaml")
	if code != 0 || !strings.Contains(out, "../../examples/policy.yaml: ok: ") || !strings.Contains(out, "tests passed") {
		t.Fatalf("check of the example: exit %d, output %q", code, out)
	}
	code, out, _ = runCmd(t, "check", "../../pkg/policy/testdata/bad/38-many-problems.yaml")
	if code != 1 || strings.Count(out, "38-many-problems.yaml:") != 5 {
		t.Fatalf("check of a bad policy: exit %d (want 1), output:\n%s", code, out)
	}
	code, out, _ = runCmd(t, "check", "../../pkg/policy/testdata/bad/29-failing-tests.yaml")
	if code != 1 || !strings.Contains(out, ":11: test failed: 10.0.2.7 -> api.github.com:443/tcp: expected allow, got deny by default") ||
		!strings.Contains(out, "2 of 3 tests failed") {
		t.Fatalf("check of a policy failing its tests: exit %d, output:\n%s", code, out)
	}
	if code, _, errOut := runCmd(t, "check"); code != 2 || !strings.Contains(errOut, "Usage: egressd check") {
		t.Fatalf("check without a file: exit %d, stderr %q", code, errOut)
	}
	if code, _, _ := runCmd(t, "check", "/nonexistent/policy.yaml"); code != 1 {
		t.Fatalf("check of a missing file: exit %d, want 1", code)
	}
}

// TestCheckInspectPorts: which ports carry a name changes what check accepts.
func TestCheckInspectPorts(t *testing.T) {
	const f = "../../pkg/policy/testdata/bad/31-wildcards-on-port-without-name.yaml"
	if code, _, _ := runCmd(t, "check", f); code != 1 {
		t.Fatalf("wildcards on port 22 accepted with the default inspect ports")
	}
	if code, out, _ := runCmd(t, "check", "--inspect-tcp", "22,443", f); code != 0 {
		t.Fatalf("with port 22 inspected the rule is fine, got exit %d: %s", code, out)
	}
}

func TestExplain(t *testing.T) {
	code, out, errOut := runCmd(t, "explain", "--policy", "../../examples/policy.yaml",
		"--src", "10.0.1.7", "--dst", "140.82.112.3", "--port", "443", "--name", "API.GitHub.com.", "--verbose")
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	if strings.Count(out, "\n") != 1 {
		t.Fatalf("want one line, got %q", out)
	}
	var rec struct {
		Src, Dst, Proto, Name, Verdict, Rule, Reason string
		NameFrom                                     string `json:"name_from"`
		DNSCheck                                     string `json:"dns_check"`
		Dport                                        int
		Enforced                                     bool
		Considered                                   []struct {
			Rule  string
			Match bool
			Why   string
		}
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if rec.Verdict != "allow" || rec.Rule != "github" || rec.Reason != "rule" || rec.Name != "api.github.com" ||
		rec.NameFrom != "sni" || rec.Dport != 443 || rec.DNSCheck != "not-checked" {
		t.Errorf("unexpected decision: %+v", rec)
	}
	if len(rec.Considered) != 12 || !rec.Considered[2].Match || rec.Considered[2].Rule != "github" {
		t.Errorf("considered rules: %+v", rec.Considered)
	}

	code, out, _ = runCmd(t, "explain", "--policy", "../../examples/policy.yaml",
		"--src", "10.0.1.7", "--dst", "203.0.113.9", "--port", "443", "--name", "pastebin.com")
	if code != 1 || !strings.Contains(out, `"verdict":"deny"`) || !strings.Contains(out, `"rule":"no-paste-or-tunnels"`) {
		t.Errorf("a denied flow: exit %d, %s", code, out)
	}
	code, out, _ = runCmd(t, "explain", "--policy", "../../examples/policy.yaml",
		"--src", "10.0.1.7", "--dst", "140.82.112.3", "--port", "22", "--name", "github.com")
	if code != 0 || !strings.Contains(out, `"name_from":"dns"`) || !strings.Contains(out, `"rule":"github-ssh"`) {
		t.Errorf("port 22 by DNS name: exit %d, %s", code, out)
	}
	for _, bad := range [][]string{
		{"explain", "--policy", "../../examples/policy.yaml", "--src", "10.0.1.7", "--dst", "nope", "--port", "443"},
		{"explain", "--policy", "../../examples/policy.yaml", "--src", "10.0.1.7", "--dst", "1.2.3.4", "--port", "70000"},
		{"explain", "--policy", "../../examples/policy.yaml", "--src", "10.0.1.7", "--dst", "1.2.3.4", "--port", "443", "--proto", "sctp"},
		{"explain", "--policy", "../../examples/policy.yaml", "--src", "10.0.1.7", "--dst", "1.2.3.4"},
		{"explain", "--policy", "../../examples/policy.yaml", "--src", "10.0.1.7", "--dst", "1.2.3.4", "--port", "443", "--name", "a b"},
	} {
		if code, _, errOut := runCmd(t, bad...); code != 2 || errOut == "" {
			t.Errorf("%v: exit %d (want 2), stderr %q", bad, code, errOut)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, cmd := range []string{"check", "explain"} {
		code, _, errOut := runCmd(t, cmd, "--help")
		if code != 0 || !strings.Contains(errOut, "Usage: egressd "+cmd) || !strings.Contains(errOut, "-inspect-tcp") {
			t.Errorf("%s --help: exit %d, %q", cmd, code, errOut)
		}
	}
	if code, out, _ := runCmd(t, "help"); code != 0 || !strings.Contains(out, "egressd check") {
		t.Errorf("help: exit %d, %q", code, out)
	}
	if code, _, _ := runCmd(t, "frobnicate"); code != 2 {
		t.Errorf("an unknown command: exit %d, want 2", code)
	}
}

// TestConfigEnvironment: every key can come from EGRESSD_*, lists included.
func TestConfigEnvironment(t *testing.T) {
	t.Setenv("EGRESSD_INSPECT_PORTS_TCP", "80,443,8443")
	t.Setenv("EGRESSD_VERIFY_DNS_RESOLVERS", "203.0.113.53:53,203.0.113.54:53")
	t.Setenv("EGRESSD_HELLO_TIMEOUT", "5s")
	t.Setenv("EGRESSD_MODE", "monitor")
	c, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(c.InspectPorts.TCP) != "[80 443 8443]" || len(c.VerifyDNS.Resolvers) != 2 ||
		c.Hello.Timeout != 5*time.Second || c.Mode != "monitor" || c.InspectPorts.UDP[0] != 443 {
		t.Errorf("config from the environment: %+v", c)
	}
	t.Setenv("EGRESSD_INSPECT_PORTS_TCP", "80,https")
	if _, err := loadConfig(""); err == nil || !strings.Contains(err.Error(), "https") {
		t.Errorf("a bad port list from the environment: %v", err)
	}
}

// TestConfigFile: unknown keys and bad values are refused with the file's name.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ text, want string }{
		{"mode: enforce\nqueue: {first: 0, count: 2}\n", ""},
		{"mdoe: enforce\n", "mdoe"},
		{"hello: {timeout: 1ms}\n", "hello.timeout"},
		{"verify_dns: {resolvers: [\"resolver.internal\"]}\n", "host:port"},
		{"monitor_until: tomorrow\n", "RFC 3339"},
		{"queue: {first: 65535, count: 2}\n", "queue"},
	} {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, []byte(tc.text), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := loadConfig(path)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.text, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path)):
			t.Errorf("%q: want an error naming %q and the file, got %v", tc.text, tc.want, err)
		}
	}
}

// TestConfigEMF: the decision log's EMF settings, off by default.
func TestConfigEMF(t *testing.T) {
	c, err := loadConfig("")
	if err != nil || c.emfConfig() != nil {
		t.Fatalf("default: %v %v", c.emfConfig(), err)
	}
	t.Setenv("EGRESSD_LOG_EMF", "true")
	t.Setenv("EGRESSD_LOG_EMF_INTERVAL", "30s")
	c, err = loadConfig("")
	if err != nil || c.emfConfig() == nil || c.emfConfig().Namespace != "egressd" || c.emfConfig().Interval != 30*time.Second {
		t.Fatalf("on: %+v %v", c.emfConfig(), err)
	}
	t.Setenv("EGRESSD_LOG_EMF_INTERVAL", "10ms")
	if _, err := loadConfig(""); err == nil || !strings.Contains(err.Error(), "log.emf_interval") {
		t.Errorf("a short interval: %v", err)
	}
}
