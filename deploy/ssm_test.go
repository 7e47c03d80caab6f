package deploy_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/deploy"
	"github.com/egressd/egressd/internal/netnstest"
	"github.com/egressd/egressd/internal/testenv"
	"github.com/egressd/egressd/test/lab"
)

const (
	ssmScript   = "deploy/ssm/egressd-push-policy.sh"
	ssmDocument = "deploy/ssm/egressd-push-policy.json"
)

// ssmDoc is the part of the committed document the tests read.
type ssmDoc struct {
	SchemaVersion string `json:"schemaVersion"`
	Parameters    map[string]struct {
		Type           string  `json:"type"`
		Default        *string `json:"default"`
		AllowedPattern string  `json:"allowedPattern"`
	} `json:"parameters"`
	MainSteps []struct {
		Action string `json:"action"`
		Inputs struct {
			RunCommand []string `json:"runCommand"`
		} `json:"inputs"`
	} `json:"mainSteps"`
}

func loadSSMDoc(t *testing.T) ssmDoc {
	t.Helper()
	var d ssmDoc
	if err := json.Unmarshal([]byte(readFile(t, repoPath(ssmDocument))), &d); err != nil {
		t.Fatalf("%s: %v", ssmDocument, err)
	}
	return d
}

// TestSSMDocumentMatchesScript: the committed document is what `make
// ssm-doc` makes from the committed script.
func TestSSMDocumentMatchesScript(t *testing.T) {
	want, err := deploy.SSMDocument([]byte(readFile(t, repoPath(ssmScript))))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), readFile(t, repoPath(ssmDocument))); diff != "" {
		t.Errorf("%s is out of date with %s; run make ssm-doc (-want +got):\n%s", ssmDocument, ssmScript, diff)
	}
	d := loadSSMDoc(t)
	if d.SchemaVersion != "2.2" || len(d.MainSteps) != 1 || d.MainSteps[0].Action != "aws:runShellScript" {
		t.Errorf("document: schemaVersion %q, %d steps; want 2.2 and one aws:runShellScript", d.SchemaVersion, len(d.MainSteps))
	}
	script := strings.Split(strings.TrimSuffix(readFile(t, repoPath(ssmScript)), "\n"), "\n")
	run := d.MainSteps[0].Inputs.RunCommand
	if diff := cmp.Diff(script[:len(script)-1], run[:len(run)-1]); diff != "" {
		t.Errorf("runCommand differs from the script (-want +got):\n%s", diff)
	}
	// Every {{ }} in the script is a parameter, and every parameter is used.
	used := map[string]bool{}
	for _, m := range regexp.MustCompile(`\{\{ *([A-Za-z0-9]+) *\}\}`).FindAllStringSubmatch(strings.Join(run, "\n"), -1) {
		used[m[1]] = true
	}
	for name := range d.Parameters {
		if !used[name] {
			t.Errorf("parameter %s is not used by the script", name)
		}
		delete(used, name)
	}
	for name := range used {
		t.Errorf("the script uses {{ %s }}, which is no parameter", name)
	}

	for _, tc := range []struct {
		name   string
		script string
	}{
		{"braces", "#!/usr/bin/env bash\necho {{ x }}\nmain \"$@\"\n"},
		{"no main call last", "#!/usr/bin/env bash\nmain \"$@\"\necho\n"},
		{"no final newline", "#!/usr/bin/env bash\nmain \"$@\""},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			if _, err := deploy.SSMDocument([]byte(tc.script)); err == nil {
				t.Error("SSMDocument accepted it")
			}
		})
	}
}

// TestSSMParameterPatterns: the allowed patterns, which SSM checks before
// pasting a value into the script, let no quote or shell syntax through.
func TestSSMParameterPatterns(t *testing.T) {
	d := loadSSMDoc(t)
	for _, tc := range []struct {
		param, value string
		ok           bool
	}{
		{"PolicySource", "s3://my-bucket/policies/egressd.yaml", true},
		{"PolicySource", "s3://my.bucket-1/a/b/c+d=e,f@g(1).yaml", true},
		{"PolicySource", "ssm:/egressd/policy", true},
		{"PolicySource", "ssm:/egressd/policy:12", true},
		{"PolicySource", "ssm:egressd-policy", true},
		{"PolicySource", "inline", true},
		{"PolicySource", "", false},
		{"PolicySource", "https://example.com/policy.yaml", false},
		{"PolicySource", "s3://bucket/key'; reboot; '", false},
		{"PolicySource", "s3://bucket/key with space", false},
		{"PolicySource", "s3://bucket/$(reboot)", false},
		{"PolicySource", "ssm:/x`reboot`", false},
		{"PolicySource", "ssm:/x:latest", false},
		{"PolicySource", "inline\n", false},
		{"PolicySource", "s3://my-bucket/egressd/policy.d/", true},
		{"PolicySource", "remove", true},
		{"PolicyFile", "", true},
		{"PolicyFile", "break-glass-inc-4711.yaml", true},
		{"PolicyFile", "team.payments.yaml", true},
		{"PolicyFile", "../policy.yaml", false},
		{"PolicyFile", ".hidden.yaml", false},
		{"PolicyFile", "team/payments.yaml", false},
		{"PolicyFile", "team.yml", false},
		{"PolicyFile", "x.yaml'; reboot; '", false},
		{"InlinePolicyBase64", "", true},
		{"InlinePolicyBase64", base64.StdEncoding.EncodeToString([]byte("version: 1\ndefault: deny\n")), true},
		{"InlinePolicyBase64", "dmVyc2lvbjogMQo='", false},
		{"InlinePolicyBase64", "dmVy\nc2lvbjogMQo=", false},
		{"TimeoutSeconds", "30", true},
		{"TimeoutSeconds", "9999", true},
		{"TimeoutSeconds", "0", false},
		{"TimeoutSeconds", "30; reboot", false},
	} {
		t.Run(fmt.Sprintf("%s=%q", tc.param, tc.value), func(t *testing.T) {
			p, ok := d.Parameters[tc.param]
			if !ok {
				t.Fatalf("no parameter %s", tc.param)
			}
			if got := regexp.MustCompile(p.AllowedPattern).MatchString(tc.value); got != tc.ok {
				t.Errorf("allowedPattern %s matches %q: %v, want %v", p.AllowedPattern, tc.value, got, tc.ok)
			}
		})
	}
}

// documentScript is the document's script as SSM would run it: each
// {{ Param }} replaced by its value (or default) once the value passes the
// parameter's allowedPattern.
func documentScript(t *testing.T, params map[string]string) string {
	t.Helper()
	d := loadSSMDoc(t)
	text := strings.Join(d.MainSteps[0].Inputs.RunCommand, "\n") + "\n"
	for name, p := range d.Parameters {
		v, ok := params[name]
		if !ok {
			if p.Default == nil {
				t.Fatalf("parameter %s is required", name)
			}
			v = *p.Default
		}
		if !regexp.MustCompile(p.AllowedPattern).MatchString(v) {
			t.Fatalf("SSM would refuse %s=%q (allowedPattern %s)", name, v, p.AllowedPattern)
		}
		text = regexp.MustCompile(`\{\{ *`+name+` *\}\}`).ReplaceAllLiteralString(text, v)
	}
	return text
}

// fakeAWS is an `aws` that serves S3 objects and Parameter Store values
// from files under $FAKE_AWS: s3/BUCKET/KEY and ssm/NAME (a name with a
// :VERSION selector is a file of that name). Missing ones fail as the CLI
// does.
const fakeAWS = `#!/usr/bin/env bash
set -euo pipefail
case "${1:-} ${2:-}" in
"s3 cp")
	shift 2
	[ "$1" = --only-show-errors ] && shift
	if [ "$1" = --recursive ]; then
		# A prefix: its *.yaml objects (the filters are --exclude '*' --include '*.yaml').
		shift
		while [ "${1#--}" != "$1" ]; do shift 2; done
		src="${1#s3://}"
		[ ! -d "$FAKE_AWS/s3/$src" ] || find "$FAKE_AWS/s3/$src" -maxdepth 1 -name '*.yaml' -exec cp {} "$2/" \;
		exit 0
	fi
	src="${1#s3://}"
	if [ ! -f "$FAKE_AWS/s3/$src" ]; then
		echo "fatal error: An error occurred (404) when calling the HeadObject operation: Key \"${src#*/}\" does not exist" >&2
		exit 1
	fi
	cp "$FAKE_AWS/s3/$src" "$2" ;;
"ssm get-parameter")
	shift 2
	name=""
	while [ $# -gt 0 ]; do
		case "$1" in
		--name) name="$2"; shift 2 ;;
		--with-decryption) shift ;;
		--query) [ "$2" = Parameter.Value ] || exit 9; shift 2 ;;
		--output) [ "$2" = text ] || exit 9; shift 2 ;;
		*) echo "fake aws: unexpected $1" >&2; exit 9 ;;
		esac
	done
	if [ ! -f "$FAKE_AWS/ssm/$name" ]; then
		echo "An error occurred (ParameterNotFound) when calling the GetParameter operation: " >&2
		exit 254
	fi
	# The CLI's text output is the value followed by a newline.
	cat "$FAKE_AWS/ssm/$name"
	echo ;;
*) echo "fake aws: unexpected $*" >&2; exit 9 ;;
esac
`

// pushEnv is where and how the push script runs against one egressd (the
// fake or the real one).
type pushEnv struct {
	ns        string // network namespace the script runs in
	policy    string // the policy file egressd runs
	readyz    string
	reloadCmd string
	aws       string // FAKE_AWS directory
	bin       string // directory with the fake aws
	envFile   string // the shared settings file (egressd.env); "" is none
	// loaded is the policy hash egressd reports now; reloads how many
	// reloads it has done.
	loaded  func() string
	reloads func() int
}

func (e *pushEnv) push(t *testing.T, params map[string]string) result {
	t.Helper()
	f := filepath.Join(t.TempDir(), "_script.sh")
	writeFile(t, f, documentScript(t, params), 0o700)
	envFile := e.envFile
	if envFile == "" {
		envFile = "/nonexistent"
	}
	// SSM's agent runs the commands as a script file with sh.
	return inNS(t, e.ns, []string{pathWith(e.bin), "FAKE_AWS=" + e.aws,
		"EGRESSD_POLICY=" + e.policy, "EGRESSD_BIN=" + egressdBin, "EGRESSD_READYZ=" + e.readyz,
		"EGRESSD_RELOAD_CMD=" + e.reloadCmd, "EGRESSD_ENV=" + envFile}, "sh", f)
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// Policies the push cases use.
const (
	goodPolicy = `version: 1
default: deny
rules:
  - name: lab-web
    domains: [allowed.example.test]
    ports: [443]
    action: allow
`
	otherGoodPolicy = goodPolicy + `  - name: lab-cidr
    cidrs: [203.0.113.20/32]
    ports: [22]
    action: allow
`
	badPolicy = `version: 1
default: deny
rules:
  - name: broken
    domains: [allowed.example.test]
    ports: [70000]
    action: allow
`
)

// runPushCases pushes policies through the document's script and checks
// each outcome: what egressd reports, what the policy file holds, what the
// script says. They run in order: each starts from the state the last left.
func runPushCases(t *testing.T, e *pushEnv) {
	writeFile(t, filepath.Join(e.aws, "s3/policies/good.yaml"), goodPolicy, 0o644)
	writeFile(t, filepath.Join(e.aws, "ssm/egressd/bad"), badPolicy, 0o644)
	writeFile(t, filepath.Join(e.aws, "ssm/egressd/policy:7"), otherGoodPolicy, 0o644)
	writeFile(t, filepath.Join(e.aws, "s3/policies/empty.yaml"), "", 0o644)
	original := readFile(t, e.policy)

	// inForce checks that egressd runs want and that the file holds it.
	inForce := func(t *testing.T, want string) {
		t.Helper()
		if got := readFile(t, e.policy); got != want {
			t.Errorf("policy file holds:\n%s\nwant:\n%s", got, want)
		}
		if got := e.loaded(); got != sha(want) {
			t.Errorf("egressd reports policy_sha256 %s, want %s", got, sha(want))
		}
		left, _ := filepath.Glob(filepath.Join(filepath.Dir(e.policy), ".policy.yaml.new.*"))
		if len(left) > 0 {
			t.Errorf("temporary files left: %v", left)
		}
	}
	step := func(name string, fn func(t *testing.T)) {
		if !t.Run(name, fn) {
			t.FailNow() // the next steps start from this one's state
		}
	}

	step("a good policy from S3 is applied and its hash reported", func(t *testing.T) {
		r := e.push(t, map[string]string{"PolicySource": "s3://policies/good.yaml", "TimeoutSeconds": "20"})
		if r.code != 0 {
			t.Fatalf("push: %v", r)
		}
		inForce(t, goodPolicy)
		if !strings.Contains(r.stdout, "OK: egressd runs policy sha256 "+sha(goodPolicy)) {
			t.Errorf("output does not report the new hash: %v", r)
		}
		if got := readFile(t, e.policy+".prev"); got != original {
			t.Errorf("policy.yaml.prev = %q, want the previous policy", got)
		}
	})
	step("a bad policy is refused with file:line and the old one stays", func(t *testing.T) {
		before := e.reloads()
		r := e.push(t, map[string]string{"PolicySource": "ssm:/egressd/bad"})
		if r.code != 1 {
			t.Fatalf("push: %v; want exit 1", r)
		}
		if !regexp.MustCompile(`(?m)^ssm:/egressd/bad:6: .*70000`).MatchString(r.stderr) {
			t.Errorf("stderr lacks the check's \"ssm:/egressd/bad:6: ...\" line: %v", r)
		}
		if !strings.Contains(r.stderr, "FAILED: egressd check refused the policy from ssm:/egressd/bad; nothing changed") {
			t.Errorf("stderr lacks the reason: %v", r)
		}
		inForce(t, goodPolicy)
		if e.reloads() != before {
			t.Errorf("egressd was reloaded for a refused policy")
		}
	})
	step("a source that cannot be fetched changes nothing", func(t *testing.T) {
		for _, src := range []string{"s3://policies/missing.yaml", "ssm:/egressd/missing", "s3://policies/empty.yaml"} {
			before := e.reloads()
			r := e.push(t, map[string]string{"PolicySource": src})
			if r.code != 1 || !strings.Contains(r.stderr, "nothing changed") {
				t.Errorf("push from %s: %v; want exit 1, nothing changed", src, r)
			}
			inForce(t, goodPolicy)
			if e.reloads() != before {
				t.Errorf("egressd was reloaded after a failed fetch from %s", src)
			}
		}
		r := e.push(t, map[string]string{"PolicySource": "inline", "InlinePolicyBase64": "not+base64="})
		if r.code != 1 {
			t.Errorf("inline with bad base64: %v; want exit 1", r)
		}
		inForce(t, goodPolicy)
	})
	step("the same policy again does nothing", func(t *testing.T) {
		before := e.reloads()
		r := e.push(t, map[string]string{"PolicySource": "inline",
			"InlinePolicyBase64": base64.StdEncoding.EncodeToString([]byte(goodPolicy))})
		if r.code != 0 || !strings.Contains(r.stdout, "is already loaded; nothing to do") {
			t.Errorf("push: %v; want exit 0, already loaded", r)
		}
		if e.reloads() != before {
			t.Errorf("egressd was reloaded for the policy it already runs")
		}
		inForce(t, goodPolicy)
	})
	step("a versioned Parameter Store parameter", func(t *testing.T) {
		r := e.push(t, map[string]string{"PolicySource": "ssm:/egressd/policy:7", "TimeoutSeconds": "20"})
		if r.code != 0 {
			t.Fatalf("push: %v", r)
		}
		// The CLI's text output adds a newline; the hash is of what was installed.
		inForce(t, otherGoodPolicy+"\n")
	})
}

// fakeEgressd answers /readyz like egressd, and reloads on POST /reload:
// it loads the policy file if the real `egressd check` accepts it, as the
// daemon would, unless stuck (then it ignores reloads).
type fakeEgressd struct {
	policy  string
	mu      sync.Mutex
	hash    string
	reloads int
	stuck   bool
	// hashOf, if set, loads the policy as egressd does and returns its
	// hash (a policy directory's); otherwise the file's sha256 is taken
	// once check accepts it.
	hashOf func(path string) (string, bool)
}

func (f *fakeEgressd) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/readyz":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"status": "ready", "policy_sha256": f.hash, "policy": f.policy, "rules": 1})
	case r.Method == http.MethodPost && r.URL.Path == "/reload":
		f.reloads++
		if f.stuck {
			return
		}
		if f.hashOf != nil {
			if h, ok := f.hashOf(f.policy); ok {
				f.hash = h
			}
			return
		}
		b, err := os.ReadFile(f.policy)
		if err != nil {
			return
		}
		if exec.Command(egressdBin, "check", f.policy).Run() == nil {
			f.hash = sha(string(b))
		}
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeEgressd) loaded() string { f.mu.Lock(); defer f.mu.Unlock(); return f.hash }
func (f *fakeEgressd) count() int     { f.mu.Lock(); defer f.mu.Unlock(); return f.reloads }

// fakePushEnv serves fake in the namespace ns and returns the push
// environment that reloads it, with a fake aws under dir.
func fakePushEnv(t *testing.T, ns *netnstest.NS, dir string, fake *fakeEgressd) *pushEnv {
	t.Helper()
	ln, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: fake}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	e := &pushEnv{
		ns: ns.Name, policy: fake.policy,
		readyz:    "http://" + ln.Addr().String() + "/readyz",
		reloadCmd: "curl -fsS -X POST http://" + ln.Addr().String() + "/reload",
		aws:       filepath.Join(dir, "aws"), bin: filepath.Join(dir, "bin"),
		loaded: fake.loaded, reloads: fake.count,
	}
	fakeBin(t, e.bin, "aws", fakeAWS)
	return e
}

// TestSSMPushPolicy runs the document's script against a fake egressd (an
// HTTP endpoint in a namespace of the test's own) and a fake aws.
func TestSSMPushPolicy(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "curl", "flock", "sha256sum", "base64")
	ns := netnstest.New(t, "ssm")
	dir := t.TempDir()
	policy := filepath.Join(dir, "etc/egressd/policy.yaml")
	starter := readFile(t, repoPath("deploy/etc/policy.yaml"))
	writeFile(t, policy, starter, 0o644)
	fake := &fakeEgressd{policy: policy, hash: sha(starter)}
	e := fakePushEnv(t, ns, dir, fake)
	runPushCases(t, e)
	current := readFile(t, policy)

	t.Run("egressd that never reports the new policy: rolled back", func(t *testing.T) {
		fake.mu.Lock()
		fake.stuck = true
		fake.mu.Unlock()
		t.Cleanup(func() { fake.mu.Lock(); fake.stuck = false; fake.mu.Unlock() })
		start := time.Now()
		r := e.push(t, map[string]string{"PolicySource": "s3://policies/good.yaml", "TimeoutSeconds": "2"})
		if r.code != 1 || !strings.Contains(r.stderr, "did not report the new policy as loaded within 2 s") {
			t.Errorf("push: %v; want exit 1 naming the timeout", r)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("the push took %s with a 2 s timeout", d)
		}
		if got := readFile(t, policy); got != current {
			t.Errorf("after the rollback the policy file holds %q, want the previous one", got)
		}
	})
	t.Run("a reload command that fails: rolled back", func(t *testing.T) {
		bad := *e
		bad.reloadCmd = "false"
		r := bad.push(t, map[string]string{"PolicySource": "s3://policies/good.yaml", "TimeoutSeconds": "2"})
		if r.code != 1 || !strings.Contains(r.stderr, "reload command 'false' failed; rolling back") {
			t.Errorf("push: %v; want exit 1 naming the reload", r)
		}
		if got := readFile(t, policy); got != current {
			t.Errorf("after the rollback the policy file holds %q, want the previous one", got)
		}
	})
	t.Run("checked with the daemon's inspect ports from egressd.env", func(t *testing.T) {
		// Port 80 carries a name only while it is inspected: with TCP 443
		// alone, a rule of "*." names on port 80 can never match, and check
		// refuses it.
		const wildcard80 = "version: 1\ndefault: deny\nrules:\n  - name: w\n    domains: [\"*.example.test\"]\n" +
			"    ports: [80]\n    proto: tcp\n    action: allow\n"
		inline := map[string]string{"PolicySource": "inline", "InlinePolicyBase64": base64.StdEncoding.EncodeToString([]byte(wildcard80))}
		withEnv := *e
		withEnv.envFile = filepath.Join(dir, "egressd.env")
		writeFile(t, withEnv.envFile, "#EGRESSD_INSPECT_PORTS_TCP=80,443\nEGRESSD_INSPECT_PORTS_TCP=443\nEGRESSD_INSPECT_PORTS_UDP=443\n", 0o644)
		r := withEnv.push(t, inline)
		if r.code != 1 || !strings.Contains(r.stderr, "inline:4: rule \"w\": its ports (80) carry no name") {
			t.Errorf("push with TCP 443 inspected: %v; want the check's refusal at inline:4", r)
		}
		if got := readFile(t, policy); got != current {
			t.Errorf("a refused policy changed the file to %q", got)
		}
		// With the shipped egressd.env (inspect ports commented out: the
		// defaults, 80 among them) the same policy is good.
		withEnv.envFile = repoPath("deploy/etc/egressd.env")
		if r := withEnv.push(t, inline); r.code != 0 {
			t.Errorf("push with the shipped egressd.env: %v", r)
		}
	})
	t.Run("bad arguments", func(t *testing.T) {
		for _, args := range [][]string{{}, {"ftp://x/y"}, {"s3://bucket"}, {"inline", "", "0"}, {"inline", "", "30", "extra"}} {
			r := runCmd(t, []string{"EGRESSD_POLICY=" + policy}, repoPath(ssmScript), args...)
			if r.code != 2 {
				t.Errorf("egressd-push-policy.sh %q: %v; want exit 2", args, r)
			}
		}
	})
}

// TestSSMAgainstLiveEgressd runs the document's script in the lab's NAT
// namespace against a real egressd built from this tree, reloaded by SIGHUP
// as systemctl reload does, and reading its policy hash from /readyz on
// metrics.listen.
func TestSSMAgainstLiveEgressd(t *testing.T) {
	const initial = "version: 1\ndefault: deny\nrules:\n  - name: lab-cidr\n    cidrs: [203.0.113.20/32]\n    action: allow\n"
	e := liveEgressd(t, initial, "", sha(initial))
	runPushCases(t, e)
}

// liveEgressd starts egressd in the lab on the policy text, or on the
// policy directory dir when it is set, waits until it reports the policy
// hash want, and returns the push environment of the NAT namespace.
func liveEgressd(t *testing.T, initial, dir, want string) *pushEnv {
	t.Helper()
	testenv.RequireCommands(t, "curl", "flock", "sha256sum", "base64")
	l := lab.Start(t)
	if err := l.ApplyRules(lab.Rules{}); err != nil {
		t.Fatal(err)
	}
	env := []string{"EGRESSD_METRICS_LISTEN=127.0.0.1:9145"}
	if dir != "" {
		env = append(env, "EGRESSD_POLICY="+dir)
	}
	eg, err := l.StartEgressd(lab.EgressdOptions{Binary: egressdBin, Policy: initial, Env: env})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("egressd logs:\n%s", eg.Logs())
		}
		if err := eg.Signal(syscall.Signal(0)); err != nil {
			t.Errorf("egressd is gone after the pushes: %v", err)
		}
	})
	readyz := "http://127.0.0.1:9145/readyz"
	loaded := func() string {
		r := inNS(t, l.NAT.Name, nil, "curl", "-sS", "-m", "2", readyz)
		var body struct {
			PolicySHA256 string `json:"policy_sha256"`
		}
		if json.Unmarshal([]byte(r.stdout), &body) != nil {
			return ""
		}
		return body.PolicySHA256
	}
	deadline := time.Now().Add(10 * time.Second)
	for loaded() != want {
		if time.Now().After(deadline) {
			r := inNS(t, l.NAT.Name, nil, "curl", "-sS", "-m", "2", readyz)
			t.Fatalf("egressd does not report policy_sha256 %s on GET %s (metrics.listen, EGRESSD_METRICS_LISTEN); "+
				"the push script needs it: %v", want, readyz, r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	policyPath := eg.PolicyPath
	if dir != "" {
		policyPath = dir
	}
	tmp := t.TempDir()
	e := &pushEnv{
		ns: l.NAT.Name, policy: policyPath, readyz: readyz,
		reloadCmd: fmt.Sprintf("kill -HUP %d", eg.PID()),
		aws:       filepath.Join(tmp, "aws"), bin: filepath.Join(tmp, "bin"),
		loaded:  loaded,
		reloads: func() int { return strings.Count(eg.Logs(), `"msg":"policy reloaded"`) },
	}
	fakeBin(t, e.bin, "aws", fakeAWS)
	return e
}
