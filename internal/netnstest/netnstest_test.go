package netnstest

import (
	"os"
	"testing"
)

// TestNamespace: Do runs inside a namespace that is not the test's, a
// socket opened there keeps working from any goroutine, and the namespace
// is gone after its test.
func TestNamespace(t *testing.T) {
	self, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var path string
	t.Run("inside", func(t *testing.T) {
		ns := New(t, "self")
		path = ns.Path()
		var inside string
		if err := ns.Do(func() (err error) {
			inside, err = os.Readlink("/proc/thread-self/ns/net")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if inside == self {
			t.Fatalf("Do ran in the test's own namespace %s", self)
		}
		pc, err := ns.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		c, err := ns.DialContext(t.Context(), "udp", pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 8)
		n, _, err := pc.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("ReadFrom = %q, %v; want ping", buf[:n], err)
		}
	})
	if path == "" {
		return // skipped: not root
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("%s still exists after its test: %v", path, err)
	}
}
