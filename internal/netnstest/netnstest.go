// Package netnstest gives a test its own network namespace and opens
// sockets inside it, from the test process itself.
//
// New creates a namespace with `ip netns add` (only loopback, brought up)
// and deletes it in t.Cleanup, also after a failure. Sockets are opened by
// a goroutine locked to an OS thread that has joined the namespace with
// setns(2); a socket stays in the namespace it was created in, so the rest
// of the test uses it from any goroutine. The thread is never unlocked, so
// the Go runtime ends it with its goroutine instead of reusing it.
//
// For a namespace made elsewhere (a lab script's), &NS{Name: name} works
// with Do and the socket helpers; only New creates and deletes one.
//
// Needs root (CAP_SYS_ADMIN) and `ip` (iproute2); without them New skips,
// or fails under CI=true (internal/testenv).
package netnstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/internal/testenv"
)

var seq atomic.Uint32

// NS is a network namespace owned by one test.
type NS struct {
	Name string // name under /run/netns
}

// New creates a namespace named egt-<pid>-<prefix><n> with loopback up.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip")
	ns := &NS{Name: fmt.Sprintf("egt-%d-%s%d", os.Getpid(), prefix, seq.Add(1))}
	if out, err := exec.Command("ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns.Name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns.Name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", ns.Name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s link set lo up: %v: %s", ns.Name, err, out)
	}
	return ns
}

// Path is the namespace's file, for setns(2).
func (ns *NS) Path() string { return "/run/netns/" + ns.Name }

// Do runs fn on an OS thread inside the namespace and returns its error.
// Only what fn does on its own goroutine happens inside: a goroutine fn
// starts runs in the test's namespace.
func (ns *NS) Do(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread leaves the pool with this goroutine.
		runtime.LockOSThread()
		fd, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- fmt.Errorf("open %s: %w", ns.Path(), err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			done <- fmt.Errorf("setns %s: %w", ns.Path(), err)
			return
		}
		done <- fn()
	}()
	return <-done
}

// ListenPacket opens a packet socket inside the namespace.
func (ns *NS) ListenPacket(network, address string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket(network, address)
		return err
	})
	return pc, err
}

// Listen opens a listening socket inside the namespace.
func (ns *NS) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	err := ns.Do(func() (err error) {
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

// DialContext opens a connection from inside the namespace. It has the
// signature of net.Dialer.DialContext, to plug into clients that take one.
func (ns *NS) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	return c, err
}
