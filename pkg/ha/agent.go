package ha

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Status is what /status answers, and what `egressd ha status` prints for
// each member.
type Status struct {
	Health
	Version   string `json:"version"`
	ENI       string `json:"eni"`
	Preferred bool   `json:"preferred"`
	Failback  bool   `json:"failback"`
	// Role is active (the first route table names this member), standby,
	// or unknown (the EC2 API has not answered yet).
	Role      string     `json:"role"`
	Owner     string     `json:"owner"`
	View      *View      `json:"view,omitempty"`
	ViewError string     `json:"view_error,omitempty"`
	RetryAt   time.Time  `json:"ec2_retry_at,omitzero"`
	Peer      PeerStatus `json:"peer"`
	Decision  string     `json:"decision"`
	NextMove  time.Time  `json:"next_failover_at"`
	LastMove  *Move      `json:"last_move,omitempty"`
	Sync      *SyncStats `json:"conntrackd,omitempty"`
}

// PeerStatus is this member's view of the other.
type PeerStatus struct {
	Name         string `json:"name"`
	URL          string `json:"url"`
	ENI          string `json:"eni"`
	Up           bool   `json:"up"`
	Failures     int    `json:"consecutive_failures"`
	PolicySHA256 string `json:"policy_sha256,omitempty"`
	Error        string `json:"error,omitempty"`
}

// Agent is one member's loop: every interval it checks itself and its
// peer, reads the EC2 view when a move is in sight (and every ec2.poll),
// decides, and moves the routes and the Elastic IP to itself when the
// Decider says so.
type Agent struct {
	cfg     *Config
	log     *slog.Logger
	cloud   *Cloud
	dec     *Decider
	local   *localCheck
	peer    *http.Client
	metrics *Metrics
	reg     *prometheus.Registry
	version string
	back    *backoff

	view    *View
	viewErr string // why the last read or move failed, until one succeeds
	retryAt time.Time
	// refreshed: since it was last active, this member has replaced its
	// own entries of forwarded connections with the peer's (RefreshStandby).
	refreshed bool
	refreshAt time.Time

	mu     sync.Mutex
	status Status
	sync   *SyncStats // conntrackd's, read apart from the rounds
	health Health     // the last check of this member (healthChecks)
}

// NewAgent returns an agent for cfg over the EC2 api. cfg must be valid.
func NewAgent(cfg *Config, api API, log *slog.Logger, version string) *Agent {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	a := &Agent{
		cfg: cfg, log: log, metrics: m, reg: reg, version: version,
		cloud: NewCloud(api, cfg, log, m),
		dec:   NewDecider(cfg, time.Now()),
		local: newLocalCheck(cfg),
		peer:  &http.Client{Timeout: cfg.Timeout},
		back:  newBackoff(cfg.Interval, cfg.EC2.MaxBackoff),
	}
	a.status = Status{Health: Health{Member: cfg.Member, Problems: []string{"starting"}}, Role: "unknown", Owner: OwnerUnknown.String()}
	return a
}

// Run checks and decides every interval until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("egressd ha running", "member", a.cfg.Member, "eni", a.cfg.ENI, "peer", a.cfg.Peer.Name, "peer_url", a.cfg.Peer.URL,
		"preferred", a.cfg.Preferred, "failback", a.cfg.Failback, "interval", a.cfg.Interval.String(),
		"failure_threshold", a.cfg.FailureThreshold, "hold_down", a.cfg.HoldDown.String(),
		"route_tables", a.cfg.RouteTables, "route_table_tag", a.cfg.RouteTableTag, "eip", a.cfg.EIP.AllocationID)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { a.slowChecks(ctx) })
	wg.Go(func() { a.healthChecks(ctx) })
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		a.round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// round is one interval's work.
func (a *Agent) round(ctx context.Context) {
	prev := a.snapshot()
	now := time.Now()
	h := a.currentHealth()
	p := checkPeer(ctx, a.peer, a.cfg)
	a.dec.Observe(now, h.Ready, p.Up)
	a.countPeer(p, prev)

	d := a.decide(now)
	fresh := false
	if d.Action != None || a.view == nil || now.Sub(a.view.At) >= a.cfg.EC2.Poll {
		// The route table is read before every move: whatever the cached
		// view said, the move is decided on a fresh one. The rules too are
		// checked afresh (a member takes the routes only if it can filter
		// the moment it does), meanwhile.
		var wg sync.WaitGroup
		if d.Action != None {
			fresh = true
			wg.Go(func() { h = a.local.check(ctx, true) })
		}
		ok := a.refresh(ctx, now)
		wg.Wait()
		if ok {
			d = a.decide(now)
		} else {
			d = Decision{None, "ec2-unreadable"}
		}
	}
	var move *Move
	if d.Action != None {
		if !fresh {
			h = a.local.check(ctx, true)
		}
		if !h.Ready {
			a.dec.NotReady()
			d = Decision{None, "not-ready"}
		} else {
			move = a.move(ctx, d)
		}
	}
	a.refreshSync(ctx, now, h, p)
	a.publish(prev, h, p, d, move)
}

// refreshSync, once per stint as standby, replaces this member's own
// entries of forwarded connections with the active peer's copies, so that
// the routes can come back to it without stalling the connections the
// peer carried meanwhile (see RefreshStandby). Only while the peer is up
// (it answers the resync) and no route or the EIP still names this member.
func (a *Agent) refreshSync(ctx context.Context, now time.Time, h Health, p peerCheck) {
	snat := a.cfg.snat()
	if a.cfg.Local.Conntrackd == "" || snat == "" || a.view == nil {
		return
	}
	switch a.view.Owner(a.cfg.ENI, a.cfg.Peer.ENI) {
	case OwnerSelf:
		a.refreshed = false
		return
	case OwnerPeer:
	default:
		return
	}
	if a.refreshed || !p.Up || !h.Ready || a.view.Names(a.cfg.ENI) || now.Sub(a.refreshAt) < a.cfg.Local.RulesEvery {
		return
	}
	a.refreshAt = now
	n, err := RefreshStandby(ctx, a.cfg.Local.Conntrackd, snat)
	if err != nil {
		a.log.Error("standby: cannot replace this member's connection entries with the peer's; connections may stall if the routes come back", "err", err)
		return
	}
	a.refreshed = true
	a.log.Info("standby: this member's own entries of forwarded connections replaced by the peer's", "removed", n, "snat", snat)
}

func (a *Agent) decide(now time.Time) Decision {
	var owner Owner
	complete := false
	if a.view != nil {
		owner = a.view.Owner(a.cfg.ENI, a.cfg.Peer.ENI)
		complete = a.view.Complete(a.cfg.ENI, a.cfg.EIP.PrivateIP)
	}
	return a.dec.Decide(now, owner, complete)
}

// refresh reads the view unless the API is in backoff; false when there is
// no fresh view.
func (a *Agent) refresh(ctx context.Context, now time.Time) bool {
	if now.Before(a.retryAt) {
		return false
	}
	v, err := a.cloud.Read(ctx)
	if err != nil {
		a.ec2Failed(err, "reading the routes")
		return false
	}
	if a.view != nil && !a.retryAt.IsZero() {
		a.log.Info("EC2 API answers again")
	}
	a.back.Reset()
	a.retryAt, a.viewErr = time.Time{}, ""
	if a.view == nil || describe(a.view) != describe(v) {
		a.log.Info("view", "owner", v.Owner(a.cfg.ENI, a.cfg.Peer.ENI).String(), "routes", describe(v))
	}
	a.view = v
	return true
}

// ec2Failed backs off after a failed call: nothing moves until the API
// answers again.
func (a *Agent) ec2Failed(err error, doing string) {
	wait := a.back.Fail()
	a.retryAt = time.Now().Add(wait)
	a.view = nil
	a.viewErr = err.Error()
	a.log.Error("EC2 API call failed; nothing moves until it answers", "doing", doing, "err", err, "retry_in_ms", wait.Milliseconds())
}

// move takes the routes and the Elastic IP.
func (a *Agent) move(ctx context.Context, d Decision) *Move {
	m := &Move{Action: d.Action.String(), Reason: d.Reason, Start: time.Now()}
	a.log.Warn("taking the routes", "action", m.Action, "reason", d.Reason, "peer_failures", a.dec.PeerFailures(),
		"owner", a.view.Owner(a.cfg.ENI, a.cfg.Peer.ENI).String(), "routes", describe(a.view))
	v, err := a.cloud.Move(ctx, a.view, m)
	if err != nil {
		m.Error = err.Error()
		a.metrics.Moves.WithLabelValues(m.Action, "error").Inc()
		a.ec2Failed(err, m.Action)
		return m
	}
	a.dec.Moved(m.Start)
	a.view = v
	took := m.Verified.Sub(m.Start)
	a.metrics.Moves.WithLabelValues(m.Action, "ok").Inc()
	a.metrics.MoveSeconds.Observe(took.Seconds())
	a.log.Warn("active: the routes and the elastic IP name this member", "action", m.Action, "changes", len(m.Changes),
		"took_ms", ms(took), "routes", describe(v))
	if a.cfg.Local.Conntrackd != "" {
		if err := PromoteSync(ctx, a.cfg.Local.Conntrackd); err != nil {
			a.log.Error("active: cannot hand conntrackd the whole table; connections inherited from the peer will not go back to it", "err", err)
		}
	}
	return m
}

// countPeer counts a check of the peer and logs its changes (before any
// move it leads to).
func (a *Agent) countPeer(p peerCheck, prev Status) {
	switch {
	case p.Up && !prev.Peer.Up:
		a.log.Info("peer up", "peer", a.cfg.Peer.Name, "policy_sha256", p.PolicySHA256)
	case a.dec.PeerFailures() == a.cfg.FailureThreshold:
		a.log.Warn("peer down", "peer", a.cfg.Peer.Name, "failures", a.dec.PeerFailures(), "err", p.Error)
	}
	result := "ready"
	switch {
	case p.Up:
	case p.Member != "":
		result = "not_ready"
	default:
		result = "unreachable"
	}
	a.metrics.Checks.WithLabelValues(result).Inc()
}

// healthChecks checks this member every interval, apart from the rounds:
// what /readyz tells the peer never waits for the EC2 API (a slow call
// would make a healthy active member look dead to its peer).
func (a *Agent) healthChecks(ctx context.Context) {
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	var prev Health
	for {
		h := a.checkSelf(ctx)
		if h.Ready != prev.Ready || (!h.Ready && !slices.Equal(h.Problems, prev.Problems)) {
			if h.Ready {
				a.log.Info("ready: this member can filter", "policy_sha256", h.PolicySHA256)
			} else {
				a.log.Warn("not ready: this member will not take the routes", "problems", h.Problems)
			}
		}
		prev = h
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkSelf checks this member once and keeps the result.
func (a *Agent) checkSelf(ctx context.Context) Health {
	h := a.local.check(ctx, false)
	a.mu.Lock()
	a.health = h
	a.mu.Unlock()
	return h
}

// currentHealth is the last check of this member; not ready when there is
// none yet, or it is stale.
func (a *Agent) currentHealth() Health {
	a.mu.Lock()
	h := a.health
	a.mu.Unlock()
	switch {
	case h.CheckedAt.IsZero():
		h = Health{Member: a.cfg.Member, Problems: []string{"not checked yet"}}
	case h.Ready && time.Since(h.CheckedAt) > a.staleAfter():
		h.Ready, h.Problems = false, []string{"the health checks are stuck: last one at " + h.CheckedAt.UTC().Format(time.RFC3339Nano)}
	}
	return h
}

// slowChecks runs the checks that are processes (the rules check,
// conntrackd -s) every RulesEvery, apart from the rounds.
func (a *Agent) slowChecks(ctx context.Context) {
	if len(a.cfg.Local.RulesCheck) == 0 && a.cfg.Local.Conntrackd == "" {
		return
	}
	t := time.NewTicker(cmp.Or(a.cfg.Local.RulesEvery, 10*time.Second))
	defer t.Stop()
	for {
		if len(a.cfg.Local.RulesCheck) > 0 {
			a.local.checkRules(ctx)
		}
		if a.cfg.Local.Conntrackd != "" {
			s := ReadSyncStats(ctx, a.cfg.Local.Conntrackd)
			a.mu.Lock()
			a.sync = &s
			a.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) snapshot() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

// publish updates /status, the metrics, and logs what changed.
func (a *Agent) publish(prev Status, h Health, p peerCheck, d Decision, move *Move) {
	owner := OwnerUnknown
	if a.view != nil {
		owner = a.view.Owner(a.cfg.ENI, a.cfg.Peer.ENI)
	}
	s := Status{
		Health: h, Version: a.version, ENI: a.cfg.ENI, Preferred: a.cfg.Preferred, Failback: a.cfg.Failback,
		Owner: owner.String(), View: a.view, ViewError: a.viewErr, RetryAt: a.retryAt,
		Peer: PeerStatus{Name: a.cfg.Peer.Name, URL: a.cfg.Peer.URL, ENI: a.cfg.Peer.ENI, Up: p.Up,
			Failures: a.dec.PeerFailures(), PolicySHA256: p.PolicySHA256, Error: p.Error},
		Decision: d.Action.String() + ": " + d.Reason, NextMove: a.dec.NextMove(), LastMove: prev.LastMove,
	}
	if move != nil {
		s.LastMove = move
	}
	switch owner {
	case OwnerSelf:
		s.Role = "active"
	case OwnerUnknown:
		s.Role = "unknown"
	default:
		s.Role = "standby"
	}
	differs := p.PolicySHA256 != "" && h.PolicySHA256 != "" && p.PolicySHA256 != h.PolicySHA256
	a.mu.Lock()
	s.Sync = a.sync
	a.status = s
	a.mu.Unlock()

	gauge(a.metrics.Active, owner == OwnerSelf)
	gauge(a.metrics.Ready, h.Ready)
	gauge(a.metrics.PeerUp, p.Up)
	gauge(a.metrics.PolicyDiffers, differs)
	if differs && (p.PolicySHA256 != prev.Peer.PolicySHA256 || h.PolicySHA256 != prev.PolicySHA256) {
		a.log.Warn("the members' policies differ", "policy_sha256", h.PolicySHA256, "peer_policy_sha256", p.PolicySHA256)
	}
	if s.Decision != prev.Decision {
		a.log.Info("decision", "action", d.Action.String(), "reason", d.Reason, "role", s.Role,
			"next_failover_at", s.NextMove.UTC().Format(time.RFC3339Nano))
	}
}

// Handler serves /readyz (this member's Health, 503 unless ready), /status
// and /metrics.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		h := a.currentHealth()
		writeJSON(w, h, h.Ready)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, a.snapshot(), true)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	return mux
}

// staleAfter is how old the last health check may be before /readyz
// stops saying ready: a check takes at most the timeout, and a loaded
// machine stretches the interval; stuck checks are caught within seconds
// all the same.
func (a *Agent) staleAfter() time.Duration {
	return max(5*a.cfg.Interval, 2*time.Second) + 3*a.cfg.Timeout
}

func writeJSON(w http.ResponseWriter, v any, ok bool) {
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(v)
}
