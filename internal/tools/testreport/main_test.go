package main

import (
	"strings"
	"testing"
)

const skipRun = `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"    lab_test.go:9: skipped: needs root\n"}
{"Action":"skip","Package":"p","Test":"TestA"}
{"Action":"run","Package":"p","Test":"TestB"}
{"Action":"pass","Package":"p","Test":"TestB"}
{"Action":"pass","Package":"p"}
`

func TestSkipFailsOnlyUnderCI(t *testing.T) {
	for _, tc := range []struct {
		name string
		ci   bool
		want bool
	}{
		{"local run: a skip is reported, not a failure", false, true},
		{"CI=true: a skip fails the run", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			ok, err := report(strings.NewReader(skipRun), &out, tc.ci)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.want {
				t.Errorf("report ok = %v, want %v; output:\n%s", ok, tc.want, out.String())
			}
			if !strings.Contains(out.String(), "--- SKIP p TestA") || !strings.Contains(out.String(), "needs root") {
				t.Errorf("the skip and its reason are not in the report:\n%s", out.String())
			}
		})
	}
}

func TestFailureAndBuildErrorFail(t *testing.T) {
	in := `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"    x_test.go:3: boom\n"}
{"Action":"fail","Package":"p","Test":"TestA"}
{"Action":"output","Package":"q","Output":"q/x.go:1:1: syntax error\n"}
{"Action":"fail","Package":"q"}
`
	var out strings.Builder
	ok, err := report(strings.NewReader(in), &out, false)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		t.Fatalf("a failed test and a failed build reported ok:\n%s", out.String())
	}
	for _, want := range []string{"boom", "syntax error"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
