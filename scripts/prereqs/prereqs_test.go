package prereqs_test

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/internal/testenv"
)

// ciPurposes are the purposes .ci/run checks, and make test's with lint:
// all but the bench-lab's.
var ciPurposes = []string{"build", "lint", "lab", "test", "deploy"}

// entry is one line of packages.txt.
type entry struct {
	purpose, pkg string
	tools        []string
}

func readList(t *testing.T) []entry {
	t.Helper()
	b, err := os.ReadFile("packages.txt")
	if err != nil {
		t.Fatal(err)
	}
	var list []entry
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) < 3 {
			t.Fatalf("packages.txt:%d: %q: want PURPOSE PACKAGE TOOL...", i+1, line)
		}
		list = append(list, entry{purpose: f[0], pkg: f[1], tools: f[2:]})
	}
	return list
}

// listed maps each tool of the list to its entry.
func listed(t *testing.T) map[string]entry {
	t.Helper()
	m := map[string]entry{}
	pkgs := map[string]bool{}
	for _, e := range readList(t) {
		if pkgs[e.pkg] {
			t.Errorf("packages.txt lists %s twice", e.pkg)
		}
		pkgs[e.pkg] = true
		for _, tool := range e.tools {
			if prev, ok := m[tool]; ok {
				t.Errorf("packages.txt: %s is under %s and %s", tool, prev.pkg, e.pkg)
			}
			m[tool] = e
		}
	}
	return m
}

// inSbin reports whether name is in /usr/sbin or /sbin, where prereqs.sh
// also looks: a tool there cannot be hidden by PATH.
func inSbin(name string) bool {
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if _, err := os.Stat(filepath.Join(d, name)); err == nil {
			return true
		}
	}
	return false
}

func writeStub(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// programs returns a new directory of links to the programs on this test's
// PATH that keep accepts (the first of each name), with a stub for each
// command of the CI purposes that this machine lacks and keep accepts, so
// that "everything present" holds on any machine. The real apt-get is never
// linked: it never runs here.
func programs(t *testing.T, keep func(name string) bool) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		ents, err := os.ReadDir(d)
		if err != nil {
			continue // a PATH entry that does not exist
		}
		for _, e := range ents {
			if e.IsDir() || e.Name() == "apt-get" || !keep(e.Name()) {
				continue
			}
			err := os.Symlink(filepath.Join(d, e.Name()), filepath.Join(dir, e.Name()))
			if err != nil && !errors.Is(err, fs.ErrExist) {
				t.Fatal(err)
			}
		}
	}
	for tool, e := range listed(t) {
		if !slices.Contains(ciPurposes, e.purpose) || strings.HasPrefix(tool, "/") || !keep(tool) {
			continue
		}
		if _, err := os.Lstat(filepath.Join(dir, tool)); err == nil || inSbin(tool) {
			continue
		}
		t.Logf("%s (%s) is not installed here: a stub stands in for it", tool, e.pkg)
		writeStub(t, filepath.Join(dir, tool), "exit 0")
	}
	return dir
}

// apt says what apt-get is on the fake PATH.
type apt int

const (
	aptNone     apt = iota // no apt-get
	aptNoop                // a stub that records its calls and installs nothing
	aptInstalls            // a stub that records its calls; install brings the hidden tools back
)

func TestCheck(t *testing.T) {
	gover := goModVersion(t)
	install := "apt-get update -qq && apt-get install -y -qq --no-install-recommends"
	tests := []struct {
		name     string
		purposes []string
		hide     []string
		sbin     bool   // the hidden tools are in /usr/sbin or /sbin
		uid      string // what id -u prints
		apt      apt
		wantCode int
		wantOut  string
		wantApt  []string // the apt-get calls, one line of arguments each
	}{
		{
			name:     "everything present, root with apt-get",
			purposes: ciPurposes, uid: "0", apt: aptInstalls,
		},
		{
			name:     "everything present, not root",
			purposes: ciPurposes, uid: "1000", apt: aptInstalls,
		},
		{
			name:     "off PATH but in /usr/sbin, as on a user's PATH",
			purposes: ciPurposes, hide: []string{"sysctl"}, sbin: true, uid: "1000", apt: aptInstalls,
		},
		{
			name:     "missing, not root",
			purposes: ciPurposes, hide: []string{"tcpdump", "systemd-analyze"}, uid: "1000", apt: aptInstalls,
			wantCode: 1,
			wantOut: "prereqs: missing (tool: Debian package):\n" +
				"  tcpdump: tcpdump\n" +
				"  systemd-analyze: systemd\n" +
				"install them as root:\n" +
				"  " + install + " tcpdump systemd\n",
		},
		{
			name:     "missing, root without apt-get",
			purposes: ciPurposes, hide: []string{"tcpdump"}, uid: "0", apt: aptNone,
			wantCode: 1,
			wantOut: "prereqs: missing (tool: Debian package):\n" +
				"  tcpdump: tcpdump\n" +
				"this machine has no apt-get; on Debian 12, install them with:\n" +
				"  " + install + " tcpdump\n",
		},
		{
			name:     "missing, root with apt-get: one update, one install",
			purposes: ciPurposes, hide: []string{"tcpdump", "systemd-analyze"}, uid: "0", apt: aptInstalls,
			wantOut: "prereqs: missing tcpdump systemd-analyze; running: " + install + " tcpdump systemd\n",
			wantApt: []string{"update -qq", "install -y -qq --no-install-recommends tcpdump systemd"},
		},
		{
			name:     "the package does not bring the tool",
			purposes: ciPurposes, hide: []string{"tcpdump"}, uid: "0", apt: aptNoop,
			wantCode: 1,
			wantOut: "prereqs: missing tcpdump; running: " + install + " tcpdump\n" +
				"prereqs: still missing after apt-get install:\n" +
				"  tcpdump: tcpdump\n",
			wantApt: []string{"update -qq", "install -y -qq --no-install-recommends tcpdump"},
		},
		{
			name:     "no go: never installed from Debian",
			purposes: []string{"build"}, hide: []string{"go"}, uid: "0", apt: aptInstalls,
			wantCode: 1,
			wantOut: "prereqs: missing (tool: Debian package):\n" +
				"  go: not a Debian package (Debian 12's golang is older): install Go " + gover + " and put its bin/ on PATH\n",
		},
		{
			name:     "unknown purpose",
			purposes: []string{"lab", "nope"}, uid: "0", apt: aptInstalls,
			wantCode: 2,
			wantOut:  "prereqs: unknown purpose \"nope\" (packages.txt has: build lint lab test deploy bench profile)\n",
		},
	}
	// Each case's PATH is two directories: its own, with the links to the
	// programs some case hides that this one does not, its stubs and what
	// its apt-get stub installs; then one shared by every case, with links
	// to all other programs (thousands: made once).
	hideable := map[string]bool{}
	for _, tt := range tests {
		for _, h := range tt.hide {
			hideable[h] = true
		}
	}
	shared := programs(t, func(name string) bool { return !hideable[name] })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, h := range tt.hide {
				switch {
				case tt.sbin && !inSbin(h):
					testenv.Unavailable(t, "needs %s in /usr/sbin or /sbin (install its package)", h)
				case !tt.sbin && inSbin(h):
					t.Fatalf("test premise: %s is in /usr/sbin or /sbin, where prereqs.sh finds it anyway; hide another tool", h)
				}
			}
			bin := programs(t, func(name string) bool { return hideable[name] && !slices.Contains(tt.hide, name) })
			writeStub(t, filepath.Join(bin, "id"), "echo "+tt.uid)
			calls := filepath.Join(t.TempDir(), "apt-calls")
			pool := t.TempDir() // what the apt-get stub installs
			switch tt.apt {
			case aptInstalls:
				for _, h := range tt.hide {
					writeStub(t, filepath.Join(pool, h), "exit 0")
				}
				fallthrough
			case aptNoop:
				writeStub(t, filepath.Join(bin, "apt-get"),
					`echo "$*" >>`+calls+`
[ "$1" != install ] || for f in `+pool+`/*; do [ ! -e "$f" ] || cp "$f" `+bin+`/; done`)
			}
			cmd := exec.Command(abs(t, "prereqs.sh"), tt.purposes...)
			cmd.Env = []string{"PATH=" + bin + string(filepath.ListSeparator) + shared}
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; output:\n%s", code, tt.wantCode, out)
			}
			if diff := cmp.Diff(tt.wantOut, string(out)); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			var got []string
			if b, err := os.ReadFile(calls); err == nil {
				got = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			}
			if diff := cmp.Diff(tt.wantApt, got); diff != "" {
				t.Errorf("apt-get calls (-want +got):\n%s", diff)
			}
		})
	}
}

func abs(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(rel)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func goModVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("go.mod has no go line")
	return ""
}

// runners are the functions whose argument at the index names a program to
// run; -1: every argument after the first (testenv.RequireCommands). A bare
// call inside a package is keyed by that package's name.
var runners = map[string]int{
	"testenv.RequireCommands": -1,
	"exec.Command":            0,
	"exec.CommandContext":     1,
	"exec.LookPath":           0,
	"lab.Command":             2,
	"lab.Exec":                2,
	"lab.run":                 0,
	"deploy_test.runCmd":      2,
	"deploy_test.inNS":        3,
}

// notDebian are programs the Go code runs that packages.txt must not list.
var notDebian = map[string]string{
	"go": "the Go toolchain, checked by prereqs.sh, not installed from Debian",
}

// TestListNamesWhatTheCodeRuns fails when a Go file runs a program by a
// literal name that packages.txt does not list: add the program to the
// list with its Debian package, so make test and .ci/run install it.
func TestListNamesWhatTheCodeRuns(t *testing.T) {
	tools := listed(t)
	root := abs(t, "../..")
	fset := token.NewFileSet()
	seen := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "testdata", "bin", "dist":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			var name string
			switch fn := call.Fun.(type) {
			case *ast.Ident:
				name = f.Name.Name + "." + fn.Name
			case *ast.SelectorExpr:
				if x, ok := fn.X.(*ast.Ident); ok {
					name = x.Name + "." + fn.Sel.Name
				}
			}
			i, ok := runners[name]
			if !ok {
				return true
			}
			args := call.Args
			switch {
			case i < 0 && len(args) > 0:
				args = args[1:]
			case i >= 0 && i < len(args):
				args = args[i : i+1]
			default:
				return true
			}
			for _, a := range args {
				lit, ok := a.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				prog, err := strconv.Unquote(lit.Value)
				if err != nil {
					continue
				}
				seen++
				_, isListed := tools[prog]
				why, isGo := notDebian[prog]
				switch {
				case isGo && isListed:
					t.Errorf("%s: packages.txt lists %s, which is %s", fset.Position(lit.Pos()), prog, why)
				case !isGo && !isListed:
					t.Errorf("%s: %s runs %q, which packages.txt does not list: add it with its Debian package and purpose", fset.Position(lit.Pos()), name, prog)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < 20 {
		t.Errorf("found %d programs run by name in the Go code; the scan no longer sees the calls (runners out of date?)", seen)
	}
}

// TestMakeChecksFirst: each target that needs Debian packages runs
// prereqs.sh, for its purposes, before anything else.
func TestMakeChecksFirst(t *testing.T) {
	testenv.RequireCommands(t, "make")
	tests := []struct {
		target string
		want   string
	}{
		{"build", "build"},
		{"demo", "build lab"},
		{"test", "build lab test deploy"},
		{"lint", "build lint"},
		{"deploy-check", "build deploy"},
		{"bench-lab", "build lab bench profile"}, // the default run profiles egressd (-perf)
		{"bench-lab BENCHLAB_FLAGS=-md=/tmp/b.md", "build lab bench"},
		{"bench-lab BENCHLAB_FLAGS=-perf=bin/perf", "build lab bench profile"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			cmd := exec.Command("make", append([]string{"-n", "--no-print-directory"}, strings.Fields(tt.target)...)...)
			cmd.Dir = "../.."
			// Under make test, make's variables would make this a sub-make
			// of it (its flags, its directory lines).
			cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
				k, _, _ := strings.Cut(kv, "=")
				return k == "MAKEFLAGS" || k == "MFLAGS" || k == "MAKELEVEL"
			})
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("make -n %s: %v\n%s", tt.target, err, out)
			}
			first, _, _ := strings.Cut(string(out), "\n")
			if want := "./scripts/prereqs/prereqs.sh " + tt.want; first != want {
				t.Errorf("make %s runs first %q, want %q", tt.target, first, want)
			}
		})
	}
}

// TestCIRunChecksFirst: .ci/run installs through prereqs.sh, for every CI
// purpose, before make, and has no package list or apt-get of its own.
func TestCIRunChecksFirst(t *testing.T) {
	b, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	check := strings.Index(s, "\nscripts/prereqs/prereqs.sh "+strings.Join(ciPurposes, " ")+"\n")
	mk := strings.Index(s, "\nmake ")
	if check < 0 || mk < 0 || check > mk {
		t.Errorf(".ci/run does not run scripts/prereqs/prereqs.sh %s before make", strings.Join(ciPurposes, " "))
	}
	for i, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") && strings.Contains(line, "apt-get") {
			t.Errorf(".ci/run:%d: %q: runs apt-get itself; its packages belong in scripts/prereqs/packages.txt", i+1, line)
		}
	}
}
