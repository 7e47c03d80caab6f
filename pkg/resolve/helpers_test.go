package resolve

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
)

// fakeClock is a Config.Now and Config.After that move only when told.
type fakeClock struct {
	mu      sync.Mutex
	t       time.Time
	waiters []clockWaiter
}

// clockWaiter is one After waiting for the clock to reach at.
type clockWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock and fires the Afters it reaches.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.t) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.t
	}
	c.waiters = kept
}

// After is Config.After on the fake clock.
func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.t
		return ch
	}
	c.waiters = append(c.waiters, clockWaiter{at: c.t.Add(d), ch: ch})
	return ch
}

// next returns how far the clock must move to fire the earliest After,
// and false when none waits.
func (c *fakeClock) next() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.waiters) == 0 {
		return 0, false
	}
	at := c.waiters[0].at
	for _, w := range c.waiters[1:] {
		if w.at.Before(at) {
			at = w.at
		}
	}
	return at.Sub(c.t), true
}

// Waiters returns how many Afters wait for the clock to move.
func (c *fakeClock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// transportFunc makes a function a Transport.
type transportFunc func(ctx context.Context, server string, query []byte) ([]byte, error)

func (f transportFunc) Exchange(ctx context.Context, server string, query []byte) ([]byte, error) {
	return f(ctx, server, query)
}

// queryType returns the QTYPE of a packed query, 0 if it does not unpack.
func queryType(query []byte) uint16 {
	var m dns.Msg
	if m.Unpack(query) != nil || len(m.Question) != 1 {
		return 0
	}
	return m.Question[0].Qtype
}

// testEnv is a Resolver asking an in-memory dnstest.Server on a fake clock.
type testEnv struct {
	r   *Resolver
	dns *dnstest.Server
	clk *fakeClock
}

// newEnv builds a testEnv; edit, if not nil, changes the Config first.
// The Transport defaults to the dnstest server in memory.
func newEnv(t testing.TB, edit func(*Config)) *testEnv {
	t.Helper()
	e := &testEnv{dns: dnstest.New(), clk: newFakeClock()}
	e.dns.SetClock(e.clk.Now)
	cfg := Config{Now: e.clk.Now, After: e.clk.After, Transport: e.dns, Timeout: 50 * time.Millisecond}
	if edit != nil {
		edit(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(r.Close)
	e.r = r
	return e
}

// verify calls Verify with a bounded context and fails t on an unexpected
// error.
func (e *testEnv) verify(t testing.TB, name, addr string) Outcome {
	t.Helper()
	out, err := e.verifyErr(name, addr)
	if err != nil {
		t.Fatalf("Verify(%s, %s): %v", name, addr, err)
	}
	return out
}

func (e *testEnv) verifyErr(name, addr string) (Outcome, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return e.r.Verify(ctx, name, netip.MustParseAddr(addr))
}

// verifyWaiting is verifyErr for a verification that waits on the fake
// clock for its name's query slot, once for each of slots in turn (none
// if slots is empty): it checks that the verification waits each time,
// sends nothing meanwhile, and goes on once the clock has moved that far.
func (e *testEnv) verifyWaiting(t testing.TB, name, addr string, slots ...time.Duration) (Outcome, error) {
	t.Helper()
	if len(slots) == 0 {
		return e.verifyErr(name, addr)
	}
	type result struct {
		out Outcome
		err error
	}
	done := make(chan result, 1)
	waits := e.r.Stats().SlotWaits
	go func() {
		out, err := e.verifyErr(name, addr)
		done <- result{out, err}
	}()
	for i, slot := range slots {
		waitFor(t, fmt.Sprintf("the verification to wait for slot %d", i), func() bool {
			return e.r.Stats().SlotWaits > waits && e.clk.Waiters() > 0
		})
		waits = e.r.Stats().SlotWaits
		before := e.dns.Total()
		e.clk.Advance(slot - 1)
		select {
		case r := <-done:
			t.Fatalf("Verify(%s, %s) = %v, %v before slot %d", name, addr, r.out, r.err, i)
		case <-time.After(10 * time.Millisecond):
		}
		if n := e.dns.Total(); n != before {
			t.Errorf("Verify(%s, %s) sent %d queries while waiting for slot %d", name, addr, n-before, i)
		}
		e.clk.Advance(1)
	}
	select {
	case r := <-done:
		return r.out, r.err
	case <-time.After(10 * time.Second):
		t.Fatalf("Verify(%s, %s) still running after its %d slots (%d slot waits)", name, addr, len(slots), e.r.Stats().SlotWaits)
	}
	return Mismatch, nil
}

// onClock runs fn, moving the fake clock to each After that fn's
// goroutines wait for until fn returns, and returns how far it moved.
func (e *testEnv) onClock(t testing.TB, fn func()) time.Duration {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	var moved time.Duration
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			return moved
		case <-time.After(time.Millisecond):
		}
		if d, ok := e.clk.next(); ok {
			e.clk.Advance(d)
			moved += d
		}
		if time.Now().After(deadline) {
			t.Fatalf("fn still running after 10s (clock moved %v)", moved)
		}
	}
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}
