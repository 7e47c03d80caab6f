package deploy_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/internal/netnstest"
	"github.com/egressd/egressd/internal/testenv"
)

const testVersion = "v0.0.0-test"

// hostArch is the dist name of this machine's architecture.
func hostArch(t *testing.T) string {
	t.Helper()
	switch runtime.GOARCH {
	case "amd64", "arm64":
		return runtime.GOARCH
	}
	t.Skipf("no egressd dist for %s", runtime.GOARCH)
	return ""
}

// makeDist packs a dist directory for this machine's architecture from the
// test's egressd, with extra environment for dist.sh.
func makeDist(t *testing.T, env ...string) string {
	t.Helper()
	out := t.TempDir()
	r := runCmd(t, append([]string{"SOURCE_DATE_EPOCH=1700000000"}, env...),
		repoPath("deploy/dist.sh"), out, testVersion, hostArch(t)+"="+egressdBin)
	if r.code != 0 {
		t.Fatalf("dist.sh: %v", r)
	}
	return out
}

// tarball is the one tarball in a dist directory.
func tarball(t *testing.T, dist string) string {
	t.Helper()
	return filepath.Join(dist, "egressd-"+testVersion+"-linux-"+hostArch(t)+".tar.gz")
}

func TestDistReproducible(t *testing.T) {
	testenv.RequireCommands(t, "tar", "gzip", "sha256sum", "install")
	a := makeDist(t)
	// A second run under another umask, from a copy of the binary with
	// another time stamp, must give the same bytes.
	bin := filepath.Join(t.TempDir(), "egressd")
	if err := os.WriteFile(bin, []byte(readFile(t, egressdBin)), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(bin, time.Unix(1, 0), time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	b := t.TempDir()
	r := runCmd(t, []string{"SOURCE_DATE_EPOCH=1700000000"}, "bash", "-c",
		`umask 0002 && exec "$0" "$@"`, repoPath("deploy/dist.sh"), b, testVersion, hostArch(t)+"="+bin)
	if r.code != 0 {
		t.Fatalf("dist.sh: %v", r)
	}
	for _, name := range []string{filepath.Base(tarball(t, a)), "SHA256SUMS"} {
		if x, y := readFile(t, filepath.Join(a, name)), readFile(t, filepath.Join(b, name)); x != y {
			t.Errorf("%s differs between two runs with the same inputs", name)
		}
	}
	if r := runCmd(t, nil, "bash", "-c", `cd "$0" && sha256sum -c --quiet SHA256SUMS`, a); r.code != 0 {
		t.Errorf("SHA256SUMS does not verify: %v", r)
	}

	// The tarball's members: names, modes, owners and times.
	r = runCmd(t, []string{"TZ=UTC"}, "tar", "--numeric-owner", "--full-time", "-tvzf", tarball(t, a))
	if r.code != 0 {
		t.Fatalf("tar -t: %v", r)
	}
	prefix := "egressd-" + testVersion + "-linux-" + hostArch(t) + "/"
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		f := strings.Fields(line)
		if len(f) != 6 {
			t.Fatalf("tar listing line %q", line)
		}
		if f[1] != "0/0" || f[3] != "2023-11-14" {
			t.Errorf("%s: owner %s, date %s; want 0/0 and SOURCE_DATE_EPOCH's 2023-11-14", f[5], f[1], f[3])
		}
		got[strings.TrimPrefix(f[5], prefix)] = f[0]
	}
	want := map[string]string{"": "drwxr-xr-x"}
	for _, d := range []string{"bin/", "libexec/", "systemd/", "etc/", "etc/sysctl.d/", "etc/modules-load.d/",
		"etc/networkd.conf.d/", "examples/", "ssm/"} {
		want[d] = "drwxr-xr-x"
	}
	for _, x := range []string{"bin/egressd", "libexec/egressd-iptables.sh", "libexec/egressd-up.sh",
		"libexec/egressd-eni.sh", "libexec/egressd-push-policy.sh", "provision.sh"} {
		want[x] = "-rwxr-xr-x"
	}
	for _, x := range []string{"systemd/egressd.service", "systemd/egressd-iptables.service", "systemd/egressd-eni.service",
		"systemd/egressd-ha.service", "systemd/egressd-conntrackd.service",
		"etc/egressd.yaml", "etc/egressd.env", "etc/policy.yaml", "etc/sysctl.d/90-egressd.conf",
		"etc/modules-load.d/egressd.conf", "etc/networkd.conf.d/egressd.conf",
		"examples/policy.yaml", "ssm/egressd-push-policy.json", "README.md", "VERSION"} {
		want[x] = "-rw-r--r--"
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tarball members (-want +got):\n%s", diff)
	}
}

// install packs a dist and runs provision.sh into a fresh DESTDIR.
func install(t *testing.T) (dist, root string) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "systemctl", "tar", "gzip", "sha256sum", "install")
	dist = makeDist(t)
	root = t.TempDir()
	if r := provision(t, root, dist); r.code != 0 {
		t.Fatalf("provision.sh: %v", r)
	}
	return dist, root
}

func provision(t *testing.T, root, dist string, env ...string) result {
	t.Helper()
	return runCmd(t, append([]string{"DESTDIR=" + root, "EGRESSD_SKIP_PACKAGES=1"}, env...),
		repoPath("packer/provision.sh"), dist)
}

// tree lists the files under root with their modes (symlinks with targets).
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == root {
			return err
		}
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		rel := "/" + strings.TrimPrefix(path, root+"/")
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			out[rel] = "-> " + target
		case info.IsDir():
		default:
			st := info.Sys().(*syscall.Stat_t)
			out[rel] = info.Mode().Perm().String() + " " + strconv.Itoa(int(st.Uid)) + ":" + strconv.Itoa(int(st.Gid))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestProvisionIntoDestdir(t *testing.T) {
	dist, root := install(t)
	const exe, conf = "-rwxr-xr-x 0:0", "-rw-r--r-- 0:0"
	want := map[string]string{
		"/usr/bin/egressd":                                                     exe,
		"/usr/libexec/egressd/egressd-iptables.sh":                             exe,
		"/usr/libexec/egressd/egressd-up.sh":                                   exe,
		"/usr/libexec/egressd/egressd-eni.sh":                                  exe,
		"/usr/libexec/egressd/egressd-push-policy.sh":                          exe,
		"/usr/lib/systemd/system/egressd.service":                              conf,
		"/usr/lib/systemd/system/egressd-iptables.service":                     conf,
		"/usr/lib/systemd/system/egressd-eni.service":                          conf,
		"/usr/lib/systemd/system/egressd-ha.service":                           conf,
		"/usr/lib/systemd/system/egressd-conntrackd.service":                   conf,
		"/etc/egressd/egressd.yaml":                                            conf,
		"/etc/egressd/egressd.env":                                             conf,
		"/etc/egressd/policy.yaml":                                             conf,
		"/etc/sysctl.d/90-egressd.conf":                                        conf,
		"/etc/modules-load.d/egressd.conf":                                     conf,
		"/etc/systemd/networkd.conf.d/egressd.conf":                            conf,
		"/usr/share/egressd/examples/policy.yaml":                              conf,
		"/usr/share/egressd/ssm/egressd-push-policy.json":                      conf,
		"/usr/share/doc/egressd/README.md":                                     conf,
		"/etc/systemd/system/multi-user.target.wants/egressd.service":          "-> /usr/lib/systemd/system/egressd.service",
		"/etc/systemd/system/multi-user.target.wants/egressd-iptables.service": "-> /usr/lib/systemd/system/egressd-iptables.service",
		"/etc/systemd/system/multi-user.target.wants/egressd-eni.service":      "-> /usr/lib/systemd/system/egressd-eni.service",
	}
	if diff := cmp.Diff(want, tree(t, root)); diff != "" {
		t.Errorf("installed files (-want +got):\n%s", diff)
	}
	// The files are the repository's.
	for inst, src := range map[string]string{
		"usr/bin/egressd":                                egressdBin,
		"usr/libexec/egressd/egressd-iptables.sh":        repoPath("scripts/iptables/egressd-iptables.sh"),
		"usr/lib/systemd/system/egressd.service":         repoPath("deploy/systemd/egressd.service"),
		"etc/egressd/policy.yaml":                        repoPath("deploy/etc/policy.yaml"),
		"etc/sysctl.d/90-egressd.conf":                   repoPath("deploy/etc/sysctl.d/90-egressd.conf"),
		"usr/share/egressd/ssm/egressd-push-policy.json": repoPath("deploy/ssm/egressd-push-policy.json"),
	} {
		if readFile(t, filepath.Join(root, inst)) != readFile(t, src) {
			t.Errorf("/%s is not %s", inst, src)
		}
	}

	// The starter policy is valid and closes the filter.
	r := runCmd(t, nil, filepath.Join(root, "usr/bin/egressd"), "check", filepath.Join(root, "etc/egressd/policy.yaml"))
	if r.code != 0 || !strings.Contains(r.stdout, "ok: 0 rules") || !strings.Contains(r.stdout, "default deny") {
		t.Errorf("egressd check on the starter policy: %v; want ok, 0 rules, default deny", r)
	}

	t.Run("again keeps the policy and restores the rest", func(t *testing.T) {
		pol, cfg := filepath.Join(root, "etc/egressd/policy.yaml"), filepath.Join(root, "etc/egressd/egressd.yaml")
		writeFile(t, pol, "version: 1\ndefault: allow\n", 0o644)
		writeFile(t, cfg, "tampered: true\n", 0o644)
		if r := provision(t, root, dist); r.code != 0 {
			t.Fatalf("provision.sh again: %v", r)
		}
		if got := readFile(t, pol); got != "version: 1\ndefault: allow\n" {
			t.Errorf("a second run replaced the policy in place: %q", got)
		}
		if readFile(t, cfg) != readFile(t, repoPath("deploy/etc/egressd.yaml")) {
			t.Error("a second run did not restore egressd.yaml")
		}
		if diff := cmp.Diff(want, tree(t, root)); diff != "" {
			t.Errorf("installed files after a second run (-want +got):\n%s", diff)
		}
	})

	t.Run("starter policy", func(t *testing.T) {
		dir := t.TempDir()
		good, bad := filepath.Join(dir, "good.yaml"), filepath.Join(dir, "bad.yaml")
		writeFile(t, good, "version: 1\ndefault: allow\n", 0o600)
		writeFile(t, bad, "version: 1\ndefault: maybe\n", 0o600)
		fresh := t.TempDir()
		if r := provision(t, fresh, dist, "EGRESSD_STARTER_POLICY="+bad); r.code == 0 || !strings.Contains(r.stdout+r.stderr, "bad.yaml:2:") {
			t.Errorf("provision.sh with a bad starter policy: %v; want a failure naming bad.yaml:2", r)
		}
		fresh = t.TempDir()
		if r := provision(t, fresh, dist, "EGRESSD_STARTER_POLICY="+good); r.code != 0 {
			t.Fatalf("provision.sh with a good starter policy: %v", r)
		}
		if got := readFile(t, filepath.Join(fresh, "etc/egressd/policy.yaml")); got != "version: 1\ndefault: allow\n" {
			t.Errorf("installed starter policy %q, want good.yaml's", got)
		}
	})

	t.Run("refuses a tarball that does not match SHA256SUMS", func(t *testing.T) {
		dir := t.TempDir()
		name := filepath.Base(tarball(t, dist))
		b := []byte(readFile(t, tarball(t, dist)))
		b[len(b)/2] ^= 0xff
		writeFile(t, filepath.Join(dir, name), string(b), 0o644)
		writeFile(t, filepath.Join(dir, "SHA256SUMS"), readFile(t, filepath.Join(dist, "SHA256SUMS")), 0o644)
		fresh := t.TempDir()
		if r := provision(t, fresh, dir); r.code == 0 || !strings.Contains(r.stderr, "does not match") {
			t.Errorf("provision.sh with a corrupt tarball: %v; want a refusal", r)
		}
		if got := tree(t, fresh); len(got) != 0 {
			t.Errorf("a refused install left files: %v", got)
		}
	})
}

// TestSystemdUnits checks the installed units with systemd-analyze: verify
// (syntax, dependencies, executables; the paths rewritten into the DESTDIR)
// and the offline security review of egressd.service's sandbox.
func TestSystemdUnits(t *testing.T) {
	_, root := install(t)
	testenv.RequireCommands(t, "systemd-analyze")
	dir := t.TempDir()
	units := []string{"egressd.service", "egressd-iptables.service", "egressd-eni.service"}
	var paths []string
	for _, u := range units {
		text := readFile(t, filepath.Join(root, "usr/lib/systemd/system", u))
		text = strings.ReplaceAll(text, "/usr/bin/egressd ", filepath.Join(root, "usr/bin/egressd")+" ")
		text = strings.ReplaceAll(text, "/usr/libexec/egressd/", filepath.Join(root, "usr/libexec/egressd")+"/")
		p := filepath.Join(dir, u)
		writeFile(t, p, text, 0o644)
		paths = append(paths, p)
	}
	r := runCmd(t, []string{"SYSTEMD_LOG_LEVEL=notice"}, "systemd-analyze", append([]string{"verify"}, paths...)...)
	if r.code != 0 || strings.TrimSpace(r.stdout+r.stderr) != "" {
		t.Errorf("systemd-analyze verify: %v", r)
	}

	r = runCmd(t, nil, "systemd-analyze", "security", "--offline=true", "--no-pager", paths[0])
	m := regexp.MustCompile(`Overall exposure level for egressd\.service: ([0-9.]+)`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("systemd-analyze security: no exposure level: %v", r)
	}
	if level, _ := strconv.ParseFloat(m[1], 64); level > 2.0 {
		t.Errorf("egressd.service exposure level %s, want at most 2.0 (systemd's \"OK\"):\n%s", m[1], r.stdout)
	}

	// What the brief and design.md ask of the units, line by line.
	for unit, lines := range map[string][]string{
		"egressd.service": {"Type=notify", "WatchdogSec=20", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=always",
			"Requires=egressd-iptables.service", "After=egressd-iptables.service network-online.target",
			"CapabilityBoundingSet=CAP_NET_ADMIN", "AmbientCapabilities=CAP_NET_ADMIN", "NoNewPrivileges=yes",
			"ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
			"RestrictAddressFamilies=AF_NETLINK AF_INET AF_INET6 AF_UNIX", "SystemCallFilter=@system-service",
			"EnvironmentFile=/etc/egressd/egressd.env", "LogsDirectory=egressd", "StandardOutput=null"},
		"egressd-iptables.service": {"Type=oneshot", "RemainAfterExit=yes", "Before=egressd.service",
			"EnvironmentFile=/etc/egressd/egressd.env", "EnvironmentFile=-/run/egressd/interfaces.env"},
	} {
		text := readFile(t, repoPath("deploy/systemd/"+unit))
		have := map[string]bool{}
		sc := bufio.NewScanner(strings.NewReader(text))
		for sc.Scan() {
			have[strings.TrimSpace(sc.Text())] = true
		}
		for _, l := range lines {
			if !have[l] {
				t.Errorf("%s lacks %q", unit, l)
			}
		}
		if strings.Contains(text, "ReadWritePaths") {
			t.Errorf("%s grants write access beyond its LogsDirectory", unit)
		}
	}
	// Stopping the rules unit, or egressd, must never take the rules out.
	if text := readFile(t, repoPath("deploy/systemd/egressd-iptables.service")); regexp.MustCompile(`(?m)^ExecStop`).MatchString(text) {
		t.Error("egressd-iptables.service has an ExecStop: a stop would open (or drop) the filter instead of failing closed")
	}
}

// TestSysctls applies the installed sysctl file in a fresh network namespace
// (every key in it is per namespace) and reads the values back: a misspelt
// key or a refused value fails.
func TestSysctls(t *testing.T) {
	_, root := install(t)
	testenv.RequireCommands(t, "sysctl", "modprobe")
	if _, err := os.Stat("/proc/sys/net/netfilter"); err != nil {
		if r := runCmd(t, nil, "modprobe", "nf_conntrack"); r.code != 0 {
			testenv.Unavailable(t, "nf_conntrack cannot be loaded: %v", r)
		}
	}
	ns := netnstest.New(t, "sysctl")
	file := filepath.Join(root, "etc/sysctl.d/90-egressd.conf")
	// Conntrack's sysctls appear in a namespace once it uses conntrack.
	if r := inNS(t, ns.Name, nil, "iptables", "-t", "filter", "-A", "INPUT", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"); r.code != 0 {
		t.Fatalf("iptables in the namespace: %v", r)
	}
	// Turn forwarding on first, to see the file turn it off.
	inNS(t, ns.Name, nil, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	if r := inNS(t, ns.Name, nil, "sysctl", "-p", file); r.code != 0 {
		t.Fatalf("sysctl -p %s in a namespace: %v", file, r)
	}
	want := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(readFile(t, file)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("sysctl line %q", line)
		}
		want[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	for _, k := range []string{"net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.all.send_redirects",
		"net.netfilter.nf_conntrack_tcp_loose", "net.netfilter.nf_conntrack_tcp_timeout_established"} {
		if _, ok := want[k]; !ok {
			t.Errorf("the sysctl file does not set %s", k)
		}
	}
	got := map[string]string{}
	for k := range want {
		r := inNS(t, ns.Name, nil, "sysctl", "-n", k)
		got[k] = strings.TrimSpace(r.stdout)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sysctl values after sysctl -p (-want +got):\n%s", diff)
	}
}

// TestShippedConfigRunsEgressd starts the installed egressd with the
// installed egressd.yaml and egressd.env, as the unit would (an unprivileged
// user holding only CAP_NET_ADMIN), in a network namespace of its own, and
// stops it with SIGTERM.
func TestShippedConfigRunsEgressd(t *testing.T) {
	_, root := install(t)
	testenv.RequireCommands(t, "setpriv")
	// The unprivileged user must reach the files, as on the instance (t.TempDir
	// makes 0700 directories).
	for _, d := range []string{filepath.Dir(root), root} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ns := netnstest.New(t, "cfg")
	policy := filepath.Join(root, "etc/egressd/policy.yaml")
	sum := sha256.Sum256([]byte(readFile(t, policy)))
	// egressd.env is read as systemd's EnvironmentFile would: KEY=VALUE lines.
	script := `set -a; . "$1"; set +a; exec setpriv --reuid=65534 --regid=65534 --clear-groups ` +
		`--inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin --bounding-set=-all,+net_admin "$2" run --config "$3"`
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "bash", "-c", script, "bash",
		filepath.Join(root, "etc/egressd/egressd.env"), filepath.Join(root, "usr/bin/egressd"),
		filepath.Join(root, "etc/egressd/egressd.yaml"))
	// systemd's LogsDirectory= stands in for /var/log/egressd: a directory
	// the service's user may write.
	logs := filepath.Join(root, "var/log/egressd")
	if err := os.MkdirAll(filepath.Dir(logs), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(logs, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(logs, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), "EGRESSD_POLICY="+policy, "EGRESSD_LOG_DECISIONS_FILE="+filepath.Join(logs, "decisions.jsonl"))
	var stderr testenv.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
	})

	running := regexp.MustCompile(`"msg":"egressd running".*`)
	deadline := time.Now().Add(20 * time.Second)
	var line string
	for time.Now().Before(deadline) && line == "" {
		line = running.FindString(stderr.String())
		select {
		case <-done:
			t.Fatalf("egressd exited (%v) before running:\n%s", waitErr, stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if line == "" {
		t.Fatalf("egressd did not log \"egressd running\" within 20 s:\n%s", stderr.String())
	}
	for _, want := range []string{`"mode":"enforce"`, `"queues":"0-1"`, `"fail_open":false`,
		`"policy_sha256":"` + hex.EncodeToString(sum[:]) + `"`, `"verify_dns":true`} {
		if !strings.Contains(line, want) {
			t.Errorf("egressd's start line lacks %s: %s", want, line)
		}
	}
	if _, err := os.Stat(filepath.Join(logs, "decisions.jsonl")); err != nil {
		t.Errorf("the decision log file: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		if waitErr != nil {
			t.Errorf("egressd after SIGTERM: %v\n%s", waitErr, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Errorf("egressd did not stop within 15 s of SIGTERM")
	}
}
