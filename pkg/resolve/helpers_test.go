package resolve

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
)

// fakeClock is a Config.Now that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
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
	cfg := Config{Now: e.clk.Now, Transport: e.dns, Timeout: 50 * time.Millisecond}
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

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}
