package deploy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/testenv"
)

// TestHAUnits checks the HA pair's units as provision.sh installs them:
// systemd-analyze verify, installed but not enabled (an HA pair's
// instances enable them), and what they must say.
func TestHAUnits(t *testing.T) {
	_, root := install(t)
	testenv.RequireCommands(t, "systemd-analyze")
	dir := t.TempDir()
	var paths []string
	for _, u := range []string{"egressd-ha.service", "egressd-conntrackd.service"} {
		if _, err := os.Lstat(filepath.Join(root, "etc/systemd/system/multi-user.target.wants", u)); err == nil {
			t.Errorf("provision.sh enabled %s: only an HA pair's instance may", u)
		}
		text := readFile(t, filepath.Join(root, "usr/lib/systemd/system", u))
		text = strings.ReplaceAll(text, "/usr/bin/egressd ", filepath.Join(root, "usr/bin/egressd")+" ")
		if _, err := os.Stat("/usr/sbin/conntrackd"); err != nil {
			// verify checks that executables exist; conntrackd is the lab's
			// package (packages.txt), not the deploy checks'.
			text = strings.ReplaceAll(text, "/usr/sbin/conntrackd ", "/usr/bin/true ")
		}
		p := filepath.Join(dir, u)
		writeFile(t, p, text, 0o644)
		paths = append(paths, p)
	}
	r := runCmd(t, []string{"SYSTEMD_LOG_LEVEL=notice"}, "systemd-analyze", append([]string{"verify"}, paths...)...)
	if r.code != 0 || strings.TrimSpace(r.stdout+r.stderr) != "" {
		t.Errorf("systemd-analyze verify: %v", r)
	}
	for unit, lines := range map[string][]string{
		"egressd-ha.service": {"Type=notify", "ExecStart=/usr/bin/egressd ha run --config /etc/egressd/egressd.yaml",
			"Restart=always", "StartLimitIntervalSec=0", "NoNewPrivileges=yes", "ProtectSystem=strict"},
		"egressd-conntrackd.service": {
			"ExecStartPre=/usr/bin/egressd ha conntrackd-config --config /etc/egressd/egressd.yaml --out /run/egressd/conntrackd.conf",
			"ExecStart=/usr/sbin/conntrackd -C /run/egressd/conntrackd.conf", "Restart=always", "Before=egressd-ha.service"},
	} {
		text := readFile(t, repoPath("deploy/systemd/"+unit))
		for _, l := range lines {
			if !strings.Contains("\n"+text+"\n", "\n"+l+"\n") {
				t.Errorf("%s lacks %q", unit, l)
			}
		}
	}
}
