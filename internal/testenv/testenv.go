// Package testenv says whether a test can run here, and stops it cleanly
// when it cannot.
//
// Privileged tests (network namespaces, iptables, NFQUEUE) call these
// helpers first. Outside CI a missing privilege or tool skips the test with
// a message that says what is missing. Under CI=true the same condition
// fails the test instead: CI runs as root with every package installed, so
// a skip there would hide a test that never ran.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips t with the reason, or fails it under CI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true, and this test cannot run: "+format, args...)
	}
	t.Skipf("skipped: "+format, args...)
}

// RequireRoot stops t unless it runs as root (uid 0).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (network namespaces, iptables, NFQUEUE); run as root or in CI")
	}
}

// RequireCommands stops t unless every named program is on PATH.
func RequireCommands(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			Unavailable(t, "needs %q on PATH (on Debian: apt-get install the package that has it; .ci/run lists them)", n)
		}
	}
}
