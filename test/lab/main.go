package lab

import (
	"fmt"
	"os"
	"testing"
)

// RunWithEgressd is a TestMain for a package of lab tests: it builds the
// egressd binary once into a temporary directory, stores its path in bin,
// runs the tests and removes the directory. It returns the exit code.
func RunWithEgressd(m *testing.M, bin *string) int {
	dir, err := os.MkdirTemp("", "egressd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer os.RemoveAll(dir)
	if *bin, err = BuildEgressd(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	return m.Run()
}
