package ha

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/egressd/egressd/test/fakeec2"
)

// testLogger logs to a buffer that the test prints if it fails.
func testLogger(t *testing.T, name string) *slog.Logger {
	var mu sync.Mutex
	var buf bytes.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("member %s's log:\n%s", name, buf.String())
			mu.Unlock()
		}
	})
	return slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// fakeEgressd answers /readyz like egressd, ready or not as told.
type fakeEgressd struct {
	ready atomic.Bool
	hash  atomic.Value
}

func (f *fakeEgressd) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	r := egressdReady{Status: "ready", PolicySHA256: f.hash.Load().(string)}
	if !f.ready.Load() {
		r.Status, r.Problems = "not-ready", []string{"queue 0 is not bound"}
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(r)
}

// testMember is one agent and what it checks, all in this process.
type testMember struct {
	egressd *fakeEgressd
	agent   *Agent
	srv     *httptest.Server
	handler atomic.Value // http.Handler
}

// startPair runs agents a and b against the fake EC2 until the test ends.
func startPair(t *testing.T, f *fakeec2.Server, url string) (a, b *testMember) {
	t.Helper()
	ms := map[string]*testMember{}
	for _, name := range []string{"a", "b"} {
		m := &testMember{egressd: &fakeEgressd{}}
		m.egressd.ready.Store(true)
		m.egressd.hash.Store("policy-1")
		m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m.handler.Load().(http.Handler).ServeHTTP(w, r)
		}))
		t.Cleanup(m.srv.Close)
		eg := httptest.NewServer(m.egressd)
		t.Cleanup(eg.Close)
		cfg := memberConfig(name, url+"/"+name)
		cfg.HoldDown = 600 * time.Millisecond
		cfg.EC2.Poll = 300 * time.Millisecond
		cfg.Local.Readyz = eg.URL + "/readyz"
		ms[name] = m
		m.agent = NewAgent(cfg, testAPI(t, cfg), testLogger(t, name), "test")
		m.handler.Store(m.agent.Handler())
	}
	ms["a"].agent.cfg.Peer.URL = ms["b"].srv.URL
	ms["b"].agent.cfg.Peer.URL = ms["a"].srv.URL
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Add(1)
		go func() { defer wg.Done(); m.agent.Run(ctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return ms["a"], ms["b"]
}

// waitFor polls cond every 10ms for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, d)
	return 0
}

func routesOn(f *fakeec2.Server, eni string) bool {
	for _, rtb := range []string{"rtb-1", "rtb-2", "rtb-3"} {
		if f.Route(rtb, "0.0.0.0/0") != eni {
			return false
		}
	}
	return f.Address("eipalloc-1").ENI == eni
}

// TestAgentPair runs two agents against the fake EC2 and fake egressds:
// failover when the active one stops being ready, failback after the
// hold-down, nothing moved while the EC2 API throttles (with growing
// retries), and a warning when the policies differ.
func TestAgentPair(t *testing.T) {
	f, url := pair(t)
	a, b := startPair(t, f, url)
	const detect = 3 * 50 * time.Millisecond

	waitFor(t, 2*time.Second, "both members ready and in sight", func() bool {
		sa, sb := a.agent.snapshot(), b.agent.snapshot()
		return sa.Ready && sb.Ready && sa.Peer.Up && sb.Peer.Up && sa.Role == "active" && sb.Role == "standby"
	})
	time.Sleep(700 * time.Millisecond) // past the startup hold-down
	if n := len(f.CallsOf("ReplaceRoute", false)); n != 0 {
		t.Fatalf("%d route changes while the active member was ready", n)
	}

	// a stops filtering: b takes over within the detection time (and a
	// round or two of slack: the check's timeout, the EC2 calls).
	t0 := time.Now()
	a.egressd.ready.Store(false)
	took := waitFor(t, 2*time.Second, "failover to b", func() bool { return routesOn(f, "eni-b") })
	t.Logf("failover: routes and eip on b %s after a stopped being ready (detection %s)", took, detect)
	if took > detect+300*time.Millisecond {
		t.Errorf("failover took %s, more than the detection time %s and 300ms", took, detect)
	}
	if first := f.CallsOf("ReplaceRoute", true)[0].At.Sub(t0); first < 2*50*time.Millisecond {
		t.Errorf("the first ReplaceRoute came %s after a stopped being ready: before failure_threshold checks", first)
	}
	waitFor(t, time.Second, "b's move verified and counted", func() bool {
		s := b.agent.snapshot()
		return s.LastMove != nil && s.LastMove.Action == "failover" && !s.LastMove.Verified.IsZero() &&
			testutil.ToFloat64(b.agent.metrics.Moves.WithLabelValues("failover", "ok")) == 1
	})

	// a is ready again: the routes return after the hold-down, not before.
	ready := time.Now()
	a.egressd.ready.Store(true)
	took = waitFor(t, 3*time.Second, "failback to a", func() bool { return routesOn(f, "eni-a") })
	t.Logf("failback: routes and eip on a %s after it was ready again (hold-down 600ms)", took)
	if took < 600*time.Millisecond {
		t.Errorf("failback after %s, before the 600ms hold-down", took)
	}
	if calls := f.CallsOf("ReplaceRoute", true); calls[len(calls)-1].At.Sub(ready) < 600*time.Millisecond {
		t.Errorf("failback's route change came before the hold-down")
	}

	// The EC2 API throttles everything: a fails, b does not guess.
	before := len(f.Calls())
	f.Inject(fakeec2.Fault{Code: fakeec2.Throttled, Count: -1})
	time.Sleep(800 * time.Millisecond) // past the hold-down since the failback
	a.egressd.ready.Store(false)
	time.Sleep(1500 * time.Millisecond)
	if !routesOn(f, "eni-a") {
		t.Fatal("the routes moved while the API throttled every call")
	}
	var gaps []time.Duration
	var last time.Time
	for _, c := range f.Calls()[before:] {
		if c.Path != "/b" || c.Action != "DescribeRouteTables" || c.Params.Get("RouteTableId.1") == "" {
			continue
		}
		if !last.IsZero() {
			gaps = append(gaps, c.At.Sub(last))
		}
		last = c.At
	}
	t.Logf("retries while throttled, gaps %v", gaps)
	if len(gaps) < 4 || gaps[0] > 150*time.Millisecond || gaps[len(gaps)-1] < 300*time.Millisecond {
		t.Errorf("retry gaps %v: want them growing from about the interval to the 400ms cap (±20%%)", gaps)
	}
	if s := b.agent.snapshot(); s.ViewError == "" || s.Role != "unknown" {
		t.Errorf("b while the API throttles: role %s, view error %q", s.Role, s.ViewError)
	}
	f.Clear()
	took = waitFor(t, 2*time.Second, "failover once the API answers", func() bool { return routesOn(f, "eni-b") })
	t.Logf("failover %s after the API answered again", took)

	// The policies differ: both say so.
	a.egressd.ready.Store(true)
	b.egressd.hash.Store("policy-2")
	waitFor(t, 2*time.Second, "policy difference seen", func() bool {
		return testutil.ToFloat64(a.agent.metrics.PolicyDiffers) == 1 && testutil.ToFloat64(b.agent.metrics.PolicyDiffers) == 1
	})
}

// TestAgentReadyz: /readyz is 503 until the member can filter, names the
// member, and a stale answer is not ready.
func TestAgentReadyz(t *testing.T) {
	_, url := pair(t)
	cfg := memberConfig("a", url)
	eg := &fakeEgressd{}
	eg.hash.Store("policy-1")
	egs := httptest.NewServer(eg)
	defer egs.Close()
	cfg.Local.Readyz = egs.URL + "/readyz"
	cfg.Peer.URL = "http://127.0.0.1:1"
	ag := NewAgent(cfg, testAPI(t, cfg), quiet(), "test")
	h := ag.Handler()
	get := func() (int, Health) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		var out Health
		json.NewDecoder(rec.Body).Decode(&out)
		return rec.Code, out
	}
	if code, hl := get(); code != 503 || hl.Ready || hl.Member != "a" {
		t.Errorf("before the first round: %d %+v", code, hl)
	}
	ag.checkSelf(context.Background())
	if code, hl := get(); code != 503 || hl.Ready || len(hl.Problems) == 0 {
		t.Errorf("egressd not ready: %d %+v", code, hl)
	}
	eg.ready.Store(true)
	ag.checkSelf(context.Background())
	if code, hl := get(); code != 200 || !hl.Ready || hl.PolicySHA256 != "policy-1" {
		t.Errorf("ready: %d %+v", code, hl)
	}
	time.Sleep(ag.staleAfter() + 10*time.Millisecond)
	if code, hl := get(); code != 503 || hl.Ready {
		t.Errorf("a stale answer: %d %+v", code, hl)
	}
}
