package ci_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/testenv"
)

// TestREADMEWalkthrough runs the README's walkthrough as written, from a
// scratch directory with links to examples/ and pkg/ and egressd on PATH.
func TestREADMEWalkthrough(t *testing.T) {
	testenv.RequireCommands(t, "bash", "jq", "date")
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- walkthrough -->\n```sh\n")
	script, _, ok2 := strings.Cut(rest, "```\n<!-- /walkthrough -->")
	if !ok || !ok2 {
		t.Fatal("the README has no walkthrough block")
	}
	dir := t.TempDir()
	root, _ := filepath.Abs("../..")
	for _, l := range []string{"examples", "pkg"} {
		if err := os.Symlink(filepath.Join(root, l), filepath.Join(dir, l)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(egressdBin)+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the walkthrough fails: %v\n%s", err, out)
	}
	for _, want := range []string{
		"policy.d: ok: ",
		`note: rule "bg-inc-4711" expires at`,
		`"rule":"bg-inc-4711"`,
		"denied once the break-glass rule has expired",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the walkthrough's output lacks %q:\n%s", want, out)
		}
	}
	review, _ := os.ReadFile(filepath.Join(dir, "review.md"))
	if !strings.Contains(string(review), "`egressd check`") {
		t.Errorf("review.md:\n%s", review)
	}
	dns, _ := os.ReadFile(filepath.Join(dir, "dns-allowed.txt"))
	if !strings.Contains(string(dns), "allowed.example.test") {
		t.Errorf("dns-allowed.txt:\n%s", dns)
	}
}
