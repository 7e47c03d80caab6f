package resolve

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/testenv"
)

// TestRefreshSchedule drives the refresher's rounds by hand on the fake
// clock: when each watched name is asked, and what Contains sees.
func TestRefreshSchedule(t *testing.T) {
	var logs testenv.Buffer
	e := newEnv(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	e.dns.SetAddrs(allowed, 60, addrs("203.0.113.10")...)
	e.dns.SetAddrs("other.example.test", 20, addrs("203.0.113.20")...)
	addr := netip.MustParseAddr("203.0.113.10")
	ctx := context.Background()
	sched := map[string]*watchItem{}
	round := func() time.Duration {
		e.r.reconcile(sched)
		return e.r.refreshDue(ctx, sched)
	}

	if got := round(); got != time.Hour {
		t.Errorf("nothing watched: next round in %v, want 1h", got)
	}
	if err := e.r.Watch([]string{allowed, "Other.Example.Test."}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		advance time.Duration
		zone    func(*dnstest.Server)
		wait    time.Duration // until the next round
		queries int           // for allowed, so far
		cached  bool          // Contains(allowed, addr) after the round
		log     string        // a line logged in this round
	}{
		// t=0: other is due at 10s, allowed at 30s.
		{name: "watched names are asked at once", wait: 10 * time.Second, queries: 2, cached: true},
		{name: "the 20s name again at half its TTL", advance: 10 * time.Second, wait: 10 * time.Second, queries: 2, cached: true},
		{name: "the 60s name at half its TTL", advance: 20 * time.Second, wait: 10 * time.Second, queries: 4, cached: true},
		// t=40: other fails.
		{
			name: "a failure retries after 1s, logged once", advance: 10 * time.Second,
			zone: func(s *dnstest.Server) { s.SetServFail(true) }, wait: time.Second, queries: 4, cached: true,
			log: `msg="dns refresh failed" name=other.example.test`,
		},
		{name: "then after 2s", advance: time.Second, wait: 2 * time.Second, queries: 4, cached: true},
		// t=60: other fails a third time (next in 4s), allowed is due and fails.
		{name: "allowed fails too", advance: 19 * time.Second, wait: time.Second, queries: 6, cached: true},
		// t=61: allowed is next due in 30s, other's retry in 3s.
		{
			name: "recovered: logged", advance: time.Second,
			zone: func(s *dnstest.Server) { s.SetServFail(false) }, wait: 3 * time.Second, queries: 8, cached: true,
			log: `msg="dns refresh recovered" name=allowed.example.test failures=1`,
		},
	}
	for _, s := range steps {
		e.clk.Advance(s.advance)
		if s.zone != nil {
			s.zone(e.dns)
		}
		if got := round(); got != s.wait {
			t.Errorf("%s: next round in %v, want %v", s.name, got, s.wait)
		}
		if got := e.dns.Queries(allowed, dns.TypeA) + e.dns.Queries(allowed, dns.TypeAAAA); got != s.queries {
			t.Errorf("%s: %d queries for %s, want %d", s.name, got, allowed, s.queries)
		}
		if got := e.r.Contains(allowed, addr); got != s.cached {
			t.Errorf("%s: Contains = %t, want %t", s.name, got, s.cached)
		}
		if s.log != "" && !strings.Contains(logs.String(), s.log) {
			t.Errorf("%s: log lacks %q; log:\n%s", s.name, s.log, logs.String())
		}
	}
	if n := strings.Count(logs.String(), "dns refresh failed"); n != 2 {
		t.Errorf("%d failure lines, want one per name:\n%s", n, logs.String())
	}

	// Replacing the set drops the old names from the schedule.
	if err := e.r.Watch([]string{"other.example.test"}); err != nil {
		t.Fatal(err)
	}
	before := e.dns.Queries(allowed, dns.TypeA)
	e.clk.Advance(time.Minute)
	round()
	if got := e.dns.Queries(allowed, dns.TypeA); got != before {
		t.Errorf("unwatched name asked again: %d A queries, want %d", got, before)
	}
	if len(sched) != 1 {
		t.Errorf("schedule holds %d names, want 1", len(sched))
	}
}

func TestWatchRefusesInvalid(t *testing.T) {
	e := newEnv(t, nil)
	if err := e.r.Watch([]string{allowed}); err != nil {
		t.Fatal(err)
	}
	err := e.r.Watch([]string{"ok.example.test", "*.example.test", "a..b"})
	if !errors.Is(err, ErrInvalidName) {
		t.Fatalf("Watch with wildcards: %v, want ErrInvalidName", err)
	}
	for _, bad := range []string{`"*.example.test"`, `"a..b"`} {
		if !strings.Contains(err.Error(), bad) {
			t.Errorf("error %q does not name %s", err, bad)
		}
	}
	if _, ok := (*e.r.watched.Load())[allowed]; !ok {
		t.Errorf("a refused Watch replaced the set")
	}
}

// TestRun runs the refresher on the real clock: a watched name with a
// short TTL is asked again and again while watched, never after, and Run
// returns when its context ends.
func TestRun(t *testing.T) {
	srv := dnstest.New()
	srv.SetAddrs(allowed, 0, addrs("203.0.113.10")...) // TTL 0: MinTTL 200ms, refreshed every 100ms
	r, err := New(Config{Transport: srv, MinTTL: 200 * time.Millisecond, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	if err := r.Watch([]string{allowed}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three refreshes", func() bool { return srv.Queries(allowed, dns.TypeA) >= 3 })
	if !r.Contains(allowed, netip.MustParseAddr("203.0.113.10")) {
		t.Errorf("watched name not cached")
	}
	if err := r.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: %v, want ErrRunning", err)
	}

	if err := r.Watch(nil); err != nil {
		t.Fatal(err)
	}
	// A round may be under way; after it, no more queries.
	time.Sleep(300 * time.Millisecond)
	n := srv.Queries(allowed, dns.TypeA)
	time.Sleep(500 * time.Millisecond)
	if got := srv.Queries(allowed, dns.TypeA); got != n {
		t.Errorf("unwatched name asked %d more times", got-n)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
		done <- nil // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of its context ending")
	}
}
