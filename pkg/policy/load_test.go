package policy

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestBadPolicies")

// checkOutput is what `egressd check` prints for a file: every load error,
// or every failing test, one "file:line: message" a line.
func checkOutput(file string) string {
	p, err := Load(file, Options{})
	var list ErrorList
	if err != nil {
		list = AsList(err)
	} else {
		list = p.RunTests()
	}
	var b strings.Builder
	for _, e := range list {
		b.WriteString(e.Error())
		b.WriteByte('\n')
	}
	return b.String()
}

// TestBadPolicies loads every file under testdata/bad and compares what
// check would print with the golden file beside it. Each file must be
// refused with at least one line-numbered problem.
func TestBadPolicies(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 25 {
		t.Fatalf("only %d bad policies under testdata/bad; the suite needs at least 25", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			got := checkOutput(f)
			if got == "" {
				t.Fatalf("%s was accepted", f)
			}
			for _, line := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
				if !strings.HasPrefix(line, f+":") {
					t.Errorf("problem does not start with the file name: %q", line)
				}
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("no golden output (run go test ./pkg/policy -run TestBadPolicies -update): %v", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("check output differs (-want +got):\n%s", diff)
			}
		})
	}
}

// TestExamplePolicy holds the shipped example to its own tests.
func TestExamplePolicy(t *testing.T) {
	const f = "../../examples/policy.yaml"
	if got := checkOutput(f); got != "" {
		t.Fatalf("the example policy fails its check:\n%s", got)
	}
	p, err := Load(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Stats().Tests < 10 {
		t.Errorf("the example policy has %d tests; it should show its rules working", p.Stats().Tests)
	}
}

// TestLineNumbers checks that a problem deep in a file points at its line.
func TestLineNumbers(t *testing.T) {
	text := "version: 1\ndefault: deny\nrules:\n" +
		"  - name: ok\n    domains: [a.example]\n    action: allow\n" +
		"  - name: broken\n    domains:\n      - b.example\n      - 10.1.2.3\n    action: allow\n"
	_, err := Parse("p.yaml", []byte(text), Options{})
	list := AsList(err)
	if len(list) != 1 || list[0].Line != 10 || !strings.Contains(list[0].Msg, `rule "broken"`) {
		t.Fatalf("want one problem on line 10 naming the rule, got %v", err)
	}
}

// TestAliases checks that YAML anchors can share lists between rules.
func TestAliases(t *testing.T) {
	p := mustParse(t, `
version: 1
default: deny
rules:
  - {name: a, from: &ci [10.0.1.0/24], domains: [a.example], action: allow}
  - {name: b, from: *ci, domains: [b.example], action: allow}
`)
	if d := p.Decide(tlsQuery("b.example")); d.Rule != "b" {
		t.Errorf("the aliased from list did not apply: %+v", d)
	}
}

func TestHashIsOfTheFileBytes(t *testing.T) {
	a := mustParse(t, exactPolicy)
	b := mustParse(t, exactPolicy+"# a comment changes the file\n")
	if a.Hash() == b.Hash() || len(a.Hash()) != 64 {
		t.Errorf("hashes %q and %q: want two different SHA-256 hex strings", a.Hash(), b.Hash())
	}
}
