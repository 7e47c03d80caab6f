package ha

import (
	"strings"
	"testing"
	"time"
)

// step is one round of a scenario: at a time (from the start), what the
// member saw, and the action it must choose. A step with owner set to
// OwnerSelf after a move of the member's own is marked moved.
type step struct {
	at       time.Duration
	ready    bool
	peerOK   bool
	owner    Owner
	complete bool
	want     Action
	moved    bool // the member moved the routes after this step (its action succeeded)
}

func deciderConfig(preferred, failback bool) *Config {
	return &Config{Preferred: preferred, Failback: failback, FailureThreshold: 3, HoldDown: 10 * time.Second}
}

// runSteps drives a Decider through steps with a fake clock, one round per
// step, and checks each action.
func runSteps(t *testing.T, cfg *Config, steps []step) {
	t.Helper()
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	d := NewDecider(cfg, start)
	for i, s := range steps {
		now := start.Add(s.at)
		d.Observe(now, s.ready, s.peerOK)
		got := d.Decide(now, s.owner, s.complete)
		if got.Action != s.want {
			t.Fatalf("step %d (t=%s, ready %v, peer ok %v, owner %s): %s (%s), want %s",
				i, s.at, s.ready, s.peerOK, s.owner, got.Action, got.Reason, s.want)
		}
		if s.moved {
			d.Moved(now)
		}
	}
}

// every returns n steps, one a second from at on, all alike.
func every(at time.Duration, n int, s step) []step {
	out := make([]step, n)
	for i := range out {
		s.at = at + time.Duration(i)*time.Second
		out[i] = s
	}
	return out
}

func concat(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestDecider(t *testing.T) {
	sec := time.Second
	tests := []struct {
		name      string
		preferred bool
		failback  bool
		steps     []step
	}{
		{
			name: "a standby takes over after failure_threshold failed checks, not before",
			steps: concat(
				every(0, 12, step{ready: true, peerOK: true, owner: OwnerPeer, complete: false, want: None}),
				[]step{
					{at: 12 * sec, ready: true, owner: OwnerPeer, want: None},
					{at: 13 * sec, ready: true, owner: OwnerPeer, want: None},
					{at: 14 * sec, ready: true, owner: OwnerPeer, want: Failover, moved: true},
					{at: 15 * sec, ready: true, owner: OwnerSelf, complete: true, want: None},
				},
			),
		},
		{
			name: "one good check resets the count",
			steps: concat(
				every(11*sec, 2, step{ready: true, owner: OwnerPeer, want: None}),
				[]step{{at: 13 * sec, ready: true, peerOK: true, owner: OwnerPeer, want: None}},
				every(14*sec, 2, step{ready: true, owner: OwnerPeer, want: None}),
				[]step{{at: 16 * sec, ready: true, owner: OwnerPeer, want: Failover}},
			),
		},
		{
			name: "never takes the routes while not ready",
			steps: concat(
				every(11*sec, 10, step{ready: false, owner: OwnerPeer, want: None}),
				[]step{{at: 21 * sec, ready: true, owner: OwnerPeer, want: Failover}},
			),
		},
		{
			name: "a member that just started waits one hold-down, even with its peer down",
			steps: concat(
				every(0, 10, step{ready: true, owner: OwnerPeer, want: None}),
				[]step{{at: 10 * sec, ready: true, owner: OwnerPeer, want: Failover}},
			),
		},
		{
			name: "an unreadable EC2 API moves nothing",
			steps: concat(
				every(11*sec, 10, step{ready: true, owner: OwnerUnknown, want: None}),
				[]step{{at: 21 * sec, ready: true, owner: OwnerPeer, want: Failover}},
			),
		},
		{
			name: "the active member finishes an incomplete move at once",
			steps: []step{
				{at: 0, ready: true, peerOK: true, owner: OwnerSelf, complete: false, want: Repair},
				{at: sec, ready: true, peerOK: true, owner: OwnerSelf, complete: true, want: None},
			},
		},
		{
			name:      "the preferred member claims routes that name no one; the other waits for it",
			preferred: true,
			steps:     []step{{at: 0, ready: true, peerOK: true, owner: OwnerNone, want: Claim}},
		},
		{
			name: "the other member claims only when the preferred one is down",
			steps: concat(
				every(0, 2, step{ready: true, peerOK: true, owner: OwnerNone, want: None}),
				every(2*sec, 2, step{ready: true, owner: OwnerNone, want: None}),
				[]step{{at: 4 * sec, ready: true, owner: OwnerNone, want: Claim}},
			),
		},
		{
			name:      "failback once the preferred member has been ready for the hold-down",
			preferred: true, failback: true,
			steps: concat(
				// Down (not ready) while the peer holds the routes.
				every(0, 5, step{ready: false, peerOK: true, owner: OwnerPeer, want: None}),
				// Ready from 5s: the routes come back at 15s, not before.
				every(5*sec, 10, step{ready: true, peerOK: true, owner: OwnerPeer, want: None}),
				[]step{
					{at: 15 * sec, ready: true, peerOK: true, owner: OwnerPeer, want: Failback, moved: true},
					{at: 16 * sec, ready: true, peerOK: true, owner: OwnerSelf, complete: true, want: None},
				},
			),
		},
		{
			name:      "readiness lost during the hold-down starts it again",
			preferred: true, failback: true,
			steps: concat(
				every(0, 8, step{ready: true, peerOK: true, owner: OwnerPeer, want: None}),
				[]step{{at: 8 * sec, ready: false, peerOK: true, owner: OwnerPeer, want: None}},
				every(9*sec, 10, step{ready: true, peerOK: true, owner: OwnerPeer, want: None}),
				[]step{{at: 19 * sec, ready: true, peerOK: true, owner: OwnerPeer, want: Failback}},
			),
		},
		{
			name:      "failback: false pins the member that took over",
			preferred: true, failback: false,
			steps: every(0, 40, step{ready: true, peerOK: true, owner: OwnerPeer, want: None}),
		},
		{
			name:  "no failback by the member that is not preferred",
			steps: every(0, 40, step{ready: true, peerOK: true, owner: OwnerPeer, want: None}),
		},
		{
			name:      "the preferred member takes the routes back from a peer it sees down, after the hold-down",
			preferred: true, failback: true,
			steps: concat(
				every(0, 12, step{ready: true, peerOK: true, owner: OwnerSelf, complete: true, want: None}),
				// The peer took over at 12s (this member was not ready).
				[]step{{at: 12 * sec, ready: false, peerOK: true, owner: OwnerPeer, want: None}},
				// Ready again, and the peer is down at once: still the hold-down since 12s.
				every(13*sec, 9, step{ready: true, owner: OwnerPeer, want: None}),
				[]step{{at: 22 * sec, ready: true, owner: OwnerPeer, want: Failover}},
			),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runSteps(t, deciderConfig(tt.preferred, tt.failback), tt.steps)
		})
	}
}

// TestDeciderSplitBrain: two members that are both ready and cannot see
// each other move the routes at most once per hold-down between them, and
// the waits grow, so the routes settle instead of flapping.
func TestDeciderSplitBrain(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	a := NewDecider(deciderConfig(true, true), start)
	b := NewDecider(deciderConfig(false, true), start)
	owner := "a" // the route table: the only state the two share
	view := func(me string) Owner {
		if owner == me {
			return OwnerSelf
		}
		return OwnerPeer
	}
	var changes []time.Duration
	// Both healthy and in sight for a minute, then cut apart for an hour.
	for at := time.Duration(0); at < time.Hour+time.Minute; at += time.Second {
		now := start.Add(at)
		see := at < time.Minute
		for _, m := range []struct {
			name string
			d    *Decider
		}{{"a", a}, {"b", b}} {
			m.d.Observe(now, true, see)
			dec := m.d.Decide(now, view(m.name), true)
			if dec.Action == Failover || dec.Action == Failback {
				owner = m.name
				m.d.Moved(now)
				changes = append(changes, at)
			}
		}
	}
	if len(changes) == 0 {
		t.Fatal("no member took the routes from a peer it could not see")
	}
	for i := 1; i < len(changes); i++ {
		if gap := changes[i] - changes[i-1]; gap < 10*time.Second {
			t.Errorf("changes at %s and %s: %s apart, under the 10s hold-down", changes[i-1], changes[i], gap)
		}
	}
	// Waits double to 8 hold-downs (80s): within an hour, about 45 changes
	// at most, against 360 with a fixed hold-down.
	if len(changes) > 50 {
		t.Errorf("%d changes in an hour of split brain (%v): the waits do not grow", len(changes), changes)
	}
	if n := len(changes); n < 3 || changes[n-1]-changes[n-2] < 80*time.Second {
		t.Errorf("changes %v: the last ones are not 8 hold-downs apart", changes)
	}
	t.Logf("split brain: %d changes of owner in an hour, first at %s", len(changes), changes[0])
	// Once the members see each other again, the preferred one keeps or
	// takes the routes and nothing moves after that.
	healed := start.Add(2 * time.Hour)
	var after int
	for at := time.Duration(0); at < 5*time.Minute; at += time.Second {
		now := healed.Add(at)
		for _, m := range []struct {
			name string
			d    *Decider
		}{{"a", a}, {"b", b}} {
			m.d.Observe(now, true, true)
			if dec := m.d.Decide(now, view(m.name), true); dec.Action != None {
				owner = m.name
				m.d.Moved(now)
				after++
			}
		}
	}
	if owner != "a" || after > 1 {
		t.Errorf("after the split: owner %s after %d changes, want a after at most 1", owner, after)
	}
}

func TestStrings(t *testing.T) {
	if got := Owner(9).String(); got != "unknown(9)" {
		t.Errorf("Owner(9) = %q", got)
	}
	if got := Action(9).String(); got != "unknown(9)" {
		t.Errorf("Action(9) = %q", got)
	}
	for _, a := range Actions() {
		if s := a.String(); s == "none" || strings.HasPrefix(s, "unknown") {
			t.Errorf("action %d has no name", a)
		}
	}
}
