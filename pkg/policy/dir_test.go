package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestDirectoryPolicy: every *.yaml of a directory is one file of the
// policy (hidden files, other files and subdirectories are not), the
// rules merge, every file's tests run against the whole, and the hash is
// the manifest's, as sha256sum computes it.
func TestDirectoryPolicy(t *testing.T) {
	const dir = "testdata/dir/good"
	p, err := Load(dir, Options{At: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	if fails := p.RunTests(); len(fails) != 0 {
		t.Fatalf("tests fail: %v", fails)
	}
	if diff := cmp.Diff([]string{"00-base.yaml", "ci.yaml", "payments.yaml"}, p.Files()); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if s := p.Stats(); s.Rules != 4 || s.Tests != 4 || p.File() != dir || p.Default() != Deny {
		t.Errorf("stats %+v, file %q, default %s", s, p.File(), p.Default())
	}
	ex := p.Explain(tlsQuery("api.stripe.com"))
	if tr := ex.Rules[2]; tr.Rule != "payments-stripe" || tr.File != filepath.Join(dir, "payments.yaml") || tr.Owner != "payments" || tr.Line != 4 {
		t.Errorf("a team file's rule as explained: %+v", tr)
	}
	exp := p.Expiring(30 * 24 * time.Hour)
	if len(exp) != 1 || exp[0].File != filepath.Join(dir, "payments.yaml") || exp[0].Line != 9 {
		t.Errorf("expiring rules: %+v", exp)
	}

	var manifest strings.Builder
	for _, n := range p.Files() {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&manifest, "%x  %s\n", sha256.Sum256(data), n)
	}
	sum := sha256.Sum256([]byte(manifest.String()))
	if want := hex.EncodeToString(sum[:]); p.Hash() != want {
		t.Errorf("hash %s, want the manifest's %s", p.Hash(), want)
	}
	if _, err := exec.LookPath("sha256sum"); err == nil {
		out, err := exec.Command("bash", "-c", `cd "$1" && LC_ALL=C sha256sum -- *.yaml | sha256sum`, "-", dir).Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Fields(string(out))[0]; got != p.Hash() {
			t.Errorf("sha256sum of the manifest is %s, the policy's hash %s", got, p.Hash())
		}
	}
}

// TestDirectoryProblems: each problem names the file that has it, with
// its line, across the files of a directory.
func TestDirectoryProblems(t *testing.T) {
	const bad = "testdata/dir/bad"
	for _, tc := range []struct {
		dir  string
		want []string
	}{
		{"two-defaults", []string{
			bad + `/two-defaults/b.yaml:2: default is already set at testdata/dir/bad/two-defaults/a.yaml:2; set it in one file of the directory (the owners' base file)`,
		}},
		{"dup-names", []string{
			bad + `/dup-names/b.yaml:5: rule "shared": the name is already used by the rule at testdata/dir/bad/dup-names/a.yaml:4; rule names must be unique`,
		}},
		{"no-default", []string{
			bad + `/no-default: no file sets the default; add "default: deny" (or allow) to one of them, e.g. testdata/dir/bad/no-default/a.yaml`,
		}},
		{"empty", []string{
			bad + `/empty: the policy directory has no *.yaml files; put the policy in one or more (e.g. one per team)`,
		}},
		{"many-problems", []string{
			bad + `/many-problems/b.yaml:4: rule "b": domain "10.0.0.1": this is an IP address, not a name; put it in the rule's cidrs`,
			bad + `/many-problems/c.yaml:4: YAML syntax: found a tab character that violates indentation (indent with spaces: YAML takes no tabs there)`,
			bad + `/many-problems/d.yaml:1: version "2" is not supported; this egressd reads version 1`,
			bad + `/many-problems/d.yaml:3: rule "d": expires "tomorrow" is not an RFC 3339 time; write it in UTC, like 2026-12-24T06:00:00Z`,
		}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			_, err := Load(filepath.Join(bad, tc.dir), Options{})
			if err == nil {
				t.Fatal("accepted")
			}
			var got []string
			for _, e := range AsList(err) {
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDirectoryFailingTest: a team file's failing test is reported at its
// own line, and names where the deciding rule or default is.
func TestDirectoryFailingTest(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "base.yaml"), []byte("version: 1\ndefault: deny\nrules:\n  - {name: a, domains: [a.example], action: allow}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "team.yaml"), []byte("version: 1\nrules:\n  - {name: t, domains: [t.example], action: allow}\ntests:\n  - {src: 10.0.1.7, name: b.example, port: 443, expect: allow}\n  - {src: 10.0.1.7, name: t.example, port: 443, expect: deny}\n"), 0o644)
	p, err := Load(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fails := p.RunTests()
	team := filepath.Join(dir, "team.yaml")
	want := []string{
		team + ":5: test failed: 10.0.1.7 -> b.example:443/tcp: expected allow, got deny by default (" + filepath.Join(dir, "base.yaml") + ":2)",
		team + ":6: test failed: 10.0.1.7 -> t.example:443/tcp: expected deny, got allow by t (line 3)",
	}
	var got []string
	for _, e := range fails {
		got = append(got, e.Error())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("failures (-want +got):\n%s", diff)
	}
}

// TestExamplePolicyDirectory holds the shipped team-file example to its
// own tests.
func TestExamplePolicyDirectory(t *testing.T) {
	p, err := Load("../../examples/policy.d", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if fails := p.RunTests(); len(fails) > 0 || p.Stats().Tests < 10 || len(p.Files()) != 3 {
		t.Errorf("the example directory: %d tests, %d files, failing: %v", p.Stats().Tests, len(p.Files()), fails)
	}
}
