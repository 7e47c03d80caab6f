package main

import (
	"context"
	"time"

	"github.com/egressd/egressd/pkg/policy"
)

// expiryRecheck bounds how long the expiry loop sleeps: the timer runs on
// the monotonic clock and expires is a wall-clock instant, so a step of the
// wall clock (NTP at boot) is caught up within this.
const expiryRecheck = time.Minute

// expireRules drops rules at their expiry, with no reload: it sleeps until
// the next expiry of the policy in force, then swaps in the same policy
// compiled without the rules that expired (policy.Expire), so Decide never
// reads a clock. A new policy (reload) wakes it through expiryKick.
func (d *daemon) expireRules(ctx context.Context) error {
	for {
		wait := expiryRecheck
		if next, ok := d.engine.Policy().NextExpiry(); ok {
			wait = max(0, min(wait, time.Until(next)))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-d.expiryKick:
			t.Stop()
		case now := <-t.C:
			d.expireNow(now)
		}
	}
}

// kickExpiry tells the expiry loop that the policy in force changed.
func (d *daemon) kickExpiry() {
	select {
	case d.expiryKick <- struct{}{}:
	default:
	}
}

// expireNow swaps in the policy without the rules expired by now.
func (d *daemon) expireNow(now time.Time) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	cur := d.engine.Policy()
	pol, gone := cur.Expire(now)
	if len(gone) == 0 {
		return
	}
	d.setPolicy(pol)
	d.metrics.rulesExpired.Add(uint64(len(gone)))
	for _, e := range gone {
		d.log.Warn("rule expired: no longer in force", "rule", e.Rule, "file", e.File, "line", e.Line,
			"expires", e.Expires.Format(time.RFC3339), "policy_sha256", pol.Hash(), "rules", pol.Stats().Rules)
	}
	if d.resolver != nil {
		if err := d.resolver.Watch(pol.LiteralNames()); err != nil {
			d.log.Error("verify_dns: cannot watch the policy's names after an expiry", "err", err)
		}
	}
	if fails := pol.RunTests(); len(fails) > 0 {
		// The expiry stands: a temporary rule must not outlive its
		// time because a test still expects it.
		d.log.Warn("the policy's tests fail without the expired rules; update the policy", "err", fails.Error())
	}
}

// logExpiry says, when a policy is loaded, which of its rules have already
// expired (not in force) and which expire within a week.
func (d *daemon) logExpiry(pol *policy.Policy) {
	for _, e := range pol.Expired() {
		d.log.Warn("policy rule already expired: not in force; remove it from the policy", "rule", e.Rule,
			"file", e.File, "line", e.Line, "expires", e.Expires.Format(time.RFC3339))
	}
	for _, e := range pol.Expiring(expirySoon) {
		d.log.Info("policy rule expires soon", "rule", e.Rule, "file", e.File, "line", e.Line,
			"expires", e.Expires.Format(time.RFC3339))
	}
}
