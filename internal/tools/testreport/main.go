// Command testreport reads `go test -json` on stdin and prints a short
// report: one line per package, the full output of every failed or skipped
// test, and a final count. It exits non-zero when a test or a build failed,
// and also when a test was skipped while CI=true: CI runs as root with every
// dependency installed, so a skip there hides a test that did not run.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

type key struct{ pkg, test string }

func main() {
	ci := os.Getenv("CI") == "true"
	ok, err := report(os.Stdin, os.Stdout, ci)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func report(in io.Reader, out io.Writer, ci bool) (bool, error) {
	output := map[key]*strings.Builder{}
	var passed, failed, skipped int
	var skips, fails []string
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			// Build errors and other non-JSON lines are passed through.
			fmt.Fprintln(out, string(line))
			continue
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "output":
			b := output[k]
			if b == nil {
				b = &strings.Builder{}
				output[k] = b
			}
			b.WriteString(e.Output)
		case "pass", "fail", "skip":
			text := ""
			if b := output[k]; b != nil {
				text = b.String()
			}
			delete(output, k)
			if e.Test == "" {
				// Package result.
				status := map[string]string{"pass": "ok  ", "fail": "FAIL", "skip": "----"}[e.Action]
				fmt.Fprintf(out, "%s %s (%s)\n", status, e.Package, time.Duration(e.Elapsed*float64(time.Second)).Round(time.Millisecond))
				if e.Action == "fail" && !strings.Contains(text, "--- FAIL") {
					fmt.Fprint(out, indent(text)) // a build or setup failure
					fails = append(fails, e.Package)
				}
				continue
			}
			switch e.Action {
			case "pass":
				passed++
			case "fail":
				failed++
				fails = append(fails, e.Package+" "+e.Test)
				fmt.Fprintf(out, "--- FAIL %s %s\n%s", e.Package, e.Test, indent(text))
			case "skip":
				skipped++
				skips = append(skips, e.Package+" "+e.Test)
				fmt.Fprintf(out, "--- SKIP %s %s\n%s", e.Package, e.Test, indent(text))
			}
		}
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	sort.Strings(skips)
	fmt.Fprintf(out, "\n%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	good := len(fails) == 0
	if ci && len(skips) > 0 {
		fmt.Fprintln(out, "CI=true: a skipped test is a failure here (CI runs as root with everything installed):")
		for _, s := range skips {
			fmt.Fprintln(out, "  ", s)
		}
		good = false
	}
	return good, nil
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if l != "" {
			b.WriteString("    ")
			b.WriteString(l)
		}
	}
	return b.String()
}
