// Package ci_test runs the policy review that examples/ci/policy-review.yml
// runs on a pull request: policy-review.sh with a real egressd.
package ci_test

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/egressd/egressd/internal/golden"
	"github.com/egressd/egressd/internal/testenv"
	"github.com/egressd/egressd/test/lab"
)

var egressdBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "egressd-ci-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	egressdBin, err = lab.BuildEgressd(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// review runs the script as the workflow does.
func review(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	testenv.RequireCommands(t, "bash", "jq", "sed")
	cmd := exec.Command("bash", append([]string{"./policy-review.sh"}, args...)...)
	cmd.Env = append(os.Environ(), "EGRESSD="+egressdBin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// copyDir copies a policy directory's files.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(from, "*.yaml"))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(to, filepath.Base(n)), b, 0o644)
	}
}

// twoPolicies copies the example policy directory twice, as the base
// branch's and the pull request's, under a temporary dir.
func twoPolicies(t *testing.T) (dir, old, new string) {
	t.Helper()
	dir = t.TempDir()
	old, new = filepath.Join(dir, "base/policy.d"), filepath.Join(dir, "pr/policy.d")
	copyDir(t, "../policy.d", old)
	copyDir(t, "../policy.d", new)
	return dir, old, new
}

// edit replaces old by new in a file, which must hold it.
func edit(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || !bytes.Contains(b, []byte(old)) {
		t.Fatalf("%s does not hold %q (%v)", path, old, err)
	}
	os.WriteFile(path, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644)
}

func line(src, dst string, port int, name, verdict, rule, reason string) string {
	return fmt.Sprintf(`{"time":"2026-11-24T10:00:00.000Z","src":%q,"sport":40000,"dst":%q,"dport":%d,"proto":"tcp","name":%q,"name_from":"sni","verdict":%q,"enforced":true,"rule":%q,"reason":%q,"latency_us":20,"dns_check":"verified"}`+"\n",
		src, dst, port, name, verdict, rule, reason)
}

// TestPolicyReview: a pull request that adds a payments rule and drops two
// CI names is checked, and the week's logs (one gzipped, as rotated) show
// per rule what it newly allows and newly denies.
func TestPolicyReview(t *testing.T) {
	dir, old, new := twoPolicies(t)
	edit(t, filepath.Join(new, "payments.yaml"), "  - name: payments-partner-sftp", "  - name: payments-vendor\n    from: [10.0.2.0/24]\n    domains: [api.vendor.example]\n    ports: [443]\n    action: allow\n\n  - name: payments-partner-sftp")
	edit(t, filepath.Join(new, "platform.yaml"), ", pypi.org, files.pythonhosted.org]", "]")

	var day1, day2 strings.Builder
	for i := 0; i < 3; i++ {
		day1.WriteString(line(fmt.Sprintf("10.0.2.%d", 7+i%2), "203.0.113.5", 443, "api.vendor.example", "deny", "default", "default"))
	}
	day1.WriteString(line("10.0.1.7", "203.0.113.6", 443, "pypi.org", "allow", "ci-packages", "rule"))
	day1.WriteString(line("10.0.1.7", "203.0.113.8", 443, "api.github.com", "allow", "ci-github", "rule"))
	day2.WriteString(line("10.0.1.8", "203.0.113.7", 443, "files.pythonhosted.org", "allow", "ci-packages", "rule"))
	day2.WriteString(line("10.0.1.8", "203.0.113.6", 443, "pypi.org", "allow", "ci-packages", "rule"))
	day2.WriteString(line("10.0.2.7", "203.0.113.9", 443, "pastebin.com", "deny", "no-paste-or-tunnels", "rule"))
	log1, log2 := filepath.Join(dir, "decisions.jsonl.1.gz"), filepath.Join(dir, "decisions.jsonl")
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write([]byte(day1.String()))
	w.Close()
	os.WriteFile(log1, gz.Bytes(), 0o644)
	os.WriteFile(log2, []byte(day2.String()), 0o644)

	code, out, errOut := review(t, old, new, log1, log2)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	golden.Check(t, "testdata/review.md", strings.ReplaceAll(out, dir, "$DIR"))

	// The same policy: nothing changes.
	if code, out, _ := review(t, old, old, log2); code != 0 || !strings.Contains(out, "**0 newly allowed, 0 newly denied**") ||
		!strings.Contains(out, "No flow in these logs gets another verdict.") {
		t.Errorf("an unchanged policy: exit %d\n%s", code, out)
	}
}

// TestPolicyReviewRefusesABadPolicy: a proposed policy that fails check is
// reported with its file:line, and the script exits 1 (the job fails).
func TestPolicyReviewRefusesABadPolicy(t *testing.T) {
	dir, old, new := twoPolicies(t)
	edit(t, filepath.Join(new, "payments.yaml"), "ports: [22]", "ports: [70000]")
	log := filepath.Join(dir, "d.jsonl")
	os.WriteFile(log, []byte(line("10.0.1.7", "203.0.113.8", 443, "api.github.com", "allow", "ci-github", "rule")), 0o644)
	code, out, _ := review(t, old, new, log)
	if code != 1 || !strings.Contains(out, "**`egressd check` refuses the new policy**") ||
		!strings.Contains(out, new+`/payments.yaml:16: rule "payments-partner-sftp": ports: port 70000 is outside 1-65535`) {
		t.Errorf("exit %d\n%s", code, out)
	}
	for _, args := range [][]string{{old, new}, {}} {
		if code, _, errOut := review(t, args...); code != 2 || !strings.Contains(errOut, "usage:") {
			t.Errorf("%q: exit %d %s", args, code, errOut)
		}
	}
	garbage := filepath.Join(dir, "garbage.bin")
	os.WriteFile(garbage, []byte("not a log"), 0o644)
	if code, _, errOut := review(t, old, old, garbage); code != 2 || !strings.Contains(errOut, "cannot read "+garbage) {
		t.Errorf("an unreadable log: exit %d %s", code, errOut)
	}
}

// TestWorkflowRunsTheScript: the workflow runs the tested script with the
// base branch's policy, the pull request's and the logs, in that order,
// comments on the pull request, and pins every action it uses.
func TestWorkflowRunsTheScript(t *testing.T) {
	b, err := os.ReadFile("policy-review.yml")
	if err != nil {
		t.Fatal(err)
	}
	var wf struct {
		On          map[string]any    `yaml:"on"`
		Permissions map[string]string `yaml:"permissions"`
		Jobs        map[string]struct {
			Steps []struct {
				Name string `yaml:"name"`
				Uses string `yaml:"uses"`
				Run  string `yaml:"run"`
				If   string `yaml:"if"`
			} `yaml:"steps"`
		} `yaml:"jobs"`
	}
	if err := yaml.Unmarshal(b, &wf); err != nil {
		t.Fatal(err)
	}
	if _, ok := wf.On["pull_request"]; !ok || wf.Permissions["pull-requests"] != "write" || wf.Permissions["id-token"] != "write" {
		t.Errorf("triggers %v, permissions %v", wf.On, wf.Permissions)
	}
	var runs, comments int
	pinned := regexp.MustCompile(`^[a-z0-9-]+/[a-z0-9-]+@v[0-9]+$`)
	call := regexp.MustCompile(`egressd-src/examples/ci/policy-review\.sh "\$RUNNER_TEMP/base/\$POLICY" "\$POLICY" \\\s+"\$RUNNER_TEMP/decisions\.jsonl"`)
	for _, s := range wf.Jobs["review"].Steps {
		if s.Uses != "" && !pinned.MatchString(s.Uses) {
			t.Errorf("step %q uses %q, not pinned to a release", s.Name, s.Uses)
		}
		if call.MatchString(s.Run) {
			runs++
		}
		if strings.Contains(s.Run, "gh pr comment") && strings.Contains(s.If, "steps.review.outputs.rc") {
			comments++
		}
	}
	if runs != 1 || comments != 1 {
		t.Errorf("the workflow runs the script %d times and comments %d times; want once each", runs, comments)
	}
	if _, err := exec.LookPath("shellcheck"); err == nil {
		if out, err := exec.Command("shellcheck", "policy-review.sh").CombinedOutput(); err != nil {
			t.Errorf("shellcheck: %s", out)
		}
	}
}
