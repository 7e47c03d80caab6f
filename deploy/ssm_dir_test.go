package deploy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/internal/netnstest"
	"github.com/egressd/egressd/internal/testenv"
	"github.com/egressd/egressd/pkg/policy"
)

// tarGz is a gzipped tar of files (name -> content), as
// `tar -C DIR -czf - .` makes it, base64-encoded for InlinePolicyBase64.
func tarGz(t *testing.T, files map[string]string) string {
	t.Helper()
	var b bytes.Buffer
	gz := gzip.NewWriter(&b)
	tw := tar.NewWriter(gz)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: "./" + n, Mode: 0o600, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(files[n]))
	}
	tw.Close()
	gz.Close()
	return base64.StdEncoding.EncodeToString(b.Bytes())
}

// dirFiles reads a policy directory's files as the policy sees them.
func dirFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	names, err := policy.DirFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range names {
		out[n] = readFile(t, filepath.Join(dir, n))
	}
	return out
}

// Team files the directory pushes use.
const (
	baseFile = "version: 1\nowner: security\ndefault: deny\nrules:\n  - {name: lab-cidr, cidrs: [203.0.113.20/32], action: allow}\n"
	teamFile = "version: 1\nowner: payments\nrules:\n  - {name: payments-web, domains: [allowed.example.test], ports: [443], action: allow}\n"
	badTeam  = "version: 1\nowner: payments\nrules:\n  - name: payments-web\n    domains: [allowed.example.test]\n    ports: [70000]\n    action: allow\n"
)

func breakGlass(expires time.Time) string {
	return fmt.Sprintf("version: 1\nowner: oncall\nrules:\n  - {name: bg-inc-4711, domains: [vendor.example.test], ports: [443], action: allow, expires: %s}\n",
		expires.UTC().Format(time.RFC3339))
}

// runDirPushCases pushes a policy directory: whole, from an inline tar and an
// S3 prefix, and one file at a time (break glass, a bad file, a removal),
// in order, each from the state the last left.
func runDirPushCases(t *testing.T, e *pushEnv) {
	versions := e.policy + ".versions"
	inForce := func(t *testing.T, want map[string]string) {
		t.Helper()
		if diff := cmp.Diff(want, dirFiles(t, e.policy)); diff != "" {
			t.Errorf("the policy directory (-want +got):\n%s", diff)
		}
		p, err := policy.Load(e.policy, policy.Options{})
		if err != nil {
			t.Fatalf("the installed directory does not load: %v", err)
		}
		if got := e.loaded(); got != p.Hash() {
			t.Errorf("egressd reports policy_sha256 %s, want the directory's %s", got, p.Hash())
		}
		if fi, err := os.Lstat(e.policy); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s is not a link to a version: %v %v", e.policy, fi, err)
		}
		left, _ := filepath.Glob(filepath.Join(versions, ".new.*"))
		if len(left) > 0 {
			t.Errorf("temporary directories left: %v", left)
		}
	}
	step := func(name string, fn func(t *testing.T)) {
		if !t.Run(name, fn) {
			t.FailNow()
		}
	}
	state := map[string]string{"00-base.yaml": baseFile, "payments.yaml": teamFile}
	bgName := "break-glass-inc-4711.yaml"
	var bgExpires time.Time

	step("a whole directory, inline as a tar, replaces the one in force", func(t *testing.T) {
		r := e.push(t, map[string]string{"PolicySource": "inline", "InlinePolicyBase64": tarGz(t, state), "TimeoutSeconds": "20"})
		if r.code != 0 || !strings.Contains(r.stdout, "OK: egressd runs policy sha256 ") {
			t.Fatalf("push: %v", r)
		}
		inForce(t, state)
	})
	step("break glass: one file added, with an expiry, the others untouched", func(t *testing.T) {
		// Long enough for the two steps before its expiry on a loaded
		// machine (each push is a few shell processes and a reload).
		bgExpires = time.Now().Add(15 * time.Second)
		bg := breakGlass(bgExpires)
		r := e.push(t, map[string]string{"PolicySource": "inline", "PolicyFile": bgName,
			"InlinePolicyBase64": base64.StdEncoding.EncodeToString([]byte(bg)), "TimeoutSeconds": "20"})
		if r.code != 0 {
			t.Fatalf("push: %v", r)
		}
		state[bgName] = bg
		inForce(t, state)
	})
	step("a whole directory from an S3 prefix keeps the break-glass file", func(t *testing.T) {
		state["ci.yaml"] = "version: 1\nowner: platform\nrules:\n  - {name: ci, domains: [ci.example.test], action: allow}\n"
		for n, c := range state {
			if n != bgName {
				writeFile(t, filepath.Join(e.aws, "s3/policies/policy.d", n), c, 0o644)
			}
		}
		r := e.push(t, map[string]string{"PolicySource": "s3://policies/policy.d/", "TimeoutSeconds": "20"})
		if r.code != 0 || !strings.Contains(r.stdout, "keeping "+bgName+" (break glass)") {
			t.Fatalf("push: %v", r)
		}
		inForce(t, state)
		if vs, _ := filepath.Glob(filepath.Join(versions, "*")); len(vs) != 2 {
			t.Errorf("versions kept: %v; want the one in force and the previous", vs)
		}
	})
	step("a bad team file is refused at its file:line, and nothing changes", func(t *testing.T) {
		before := e.reloads()
		r := e.push(t, map[string]string{"PolicySource": "inline", "PolicyFile": "payments.yaml",
			"InlinePolicyBase64": base64.StdEncoding.EncodeToString([]byte(badTeam))})
		if r.code != 1 || !strings.Contains(r.stderr, e.policy+`/payments.yaml:6: rule "payments-web": ports: port 70000 is outside 1-65535`) {
			t.Fatalf("push: %v; want exit 1 with the file's line", r)
		}
		inForce(t, state)
		if e.reloads() != before {
			t.Error("egressd was reloaded for a refused policy")
		}
	})
	step("the break-glass file goes with the first push after its rules expire", func(t *testing.T) {
		time.Sleep(time.Until(bgExpires)) // past the expiry (written to the second, rounded down)
		r := e.push(t, map[string]string{"PolicySource": "s3://policies/policy.d/", "TimeoutSeconds": "20"})
		if r.code != 0 || !strings.Contains(r.stdout, "removing "+bgName+": every rule in it has expired") {
			t.Fatalf("push: %v", r)
		}
		delete(state, bgName)
		inForce(t, state)
	})
	step("one file removed", func(t *testing.T) {
		r := e.push(t, map[string]string{"PolicySource": "remove", "PolicyFile": "ci.yaml", "TimeoutSeconds": "20"})
		if r.code != 0 {
			t.Fatalf("push: %v", r)
		}
		delete(state, "ci.yaml")
		inForce(t, state)
		if r := e.push(t, map[string]string{"PolicySource": "remove", "PolicyFile": "nope.yaml"}); r.code != 1 ||
			!strings.Contains(r.stderr, "nope.yaml is not a file of the policy") {
			t.Errorf("removing a file that is not there: %v", r)
		}
	})
}

// TestSSMPushPolicyDirectory runs the document's script on a policy
// directory against a fake egressd that loads it as egressd does.
func TestSSMPushPolicyDirectory(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "curl", "flock", "sha256sum", "base64", "tar", "gzip", "find")
	ns := netnstest.New(t, "ssmdir")
	dir := t.TempDir()
	pdir := filepath.Join(dir, "etc/egressd/policy.d")
	writeFile(t, filepath.Join(pdir, "00-base.yaml"), baseFile, 0o644)
	hashOf := func(path string) (string, bool) {
		p, err := policy.Load(path, policy.Options{})
		if err != nil || len(p.RunTests()) > 0 {
			return "", false
		}
		return p.Hash(), true
	}
	start, _ := hashOf(pdir)
	fake := &fakeEgressd{policy: pdir, hash: start, hashOf: hashOf}
	e := fakePushEnv(t, ns, dir, fake)
	runDirPushCases(t, e)

	t.Run("egressd that never reports the new directory: the link goes back", func(t *testing.T) {
		before := readFile(t, filepath.Join(pdir, "payments.yaml"))
		target, _ := os.Readlink(pdir)
		fake.mu.Lock()
		fake.stuck = true
		fake.mu.Unlock()
		t.Cleanup(func() { fake.mu.Lock(); fake.stuck = false; fake.mu.Unlock() })
		r := e.push(t, map[string]string{"PolicySource": "inline", "PolicyFile": "payments.yaml", "TimeoutSeconds": "2",
			"InlinePolicyBase64": base64.StdEncoding.EncodeToString([]byte(teamFile + "  - {name: more, domains: [more.example.test], action: allow}\n"))})
		if r.code != 1 || !strings.Contains(r.stderr, "did not report the new policy as loaded within 2 s; rolling back") {
			t.Errorf("push: %v; want a rollback", r)
		}
		if now, _ := os.Readlink(pdir); now != target || readFile(t, filepath.Join(pdir, "payments.yaml")) != before {
			t.Errorf("after the rollback the link is %s (was %s)", now, target)
		}
		if vs, _ := filepath.Glob(filepath.Join(pdir+".versions", "*")); len(vs) != 2 {
			t.Errorf("versions after a rollback: %v", vs)
		}
	})
	t.Run("PolicyFile and prefixes need a directory", func(t *testing.T) {
		file := *e
		file.policy = filepath.Join(dir, "etc/egressd/policy.yaml")
		writeFile(t, file.policy, goodPolicy, 0o644)
		for _, params := range []map[string]string{
			{"PolicySource": "inline", "PolicyFile": "x.yaml", "InlinePolicyBase64": base64.StdEncoding.EncodeToString([]byte(teamFile))},
			{"PolicySource": "s3://policies/policy.d/"},
		} {
			if r := file.push(t, params); r.code != 1 || !strings.Contains(r.stderr, "needs a policy directory") {
				t.Errorf("push %v to a policy file: %v", params, r)
			}
		}
		if r := runCmd(t, []string{"EGRESSD_POLICY=" + pdir}, repoPath(ssmScript), "remove"); r.code != 2 {
			t.Errorf("remove without a file: %v; want exit 2", r)
		}
	})
}

// TestSSMDirectoryAgainstLiveEgressd pushes a policy directory to a real
// egressd in the lab, which reads the directory through the link the push
// swaps.
func TestSSMDirectoryAgainstLiveEgressd(t *testing.T) {
	testenv.RequireCommands(t, "tar", "gzip", "find")
	dir := filepath.Join(t.TempDir(), "policy.d")
	writeFile(t, filepath.Join(dir, "00-base.yaml"), baseFile, 0o644)
	p, err := policy.Load(dir, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	runDirPushCases(t, liveEgressd(t, "", dir, p.Hash()))
}
