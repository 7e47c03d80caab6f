package engine

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/pkg/decide"
	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

// scriptedVerifier answers Verify with a fixed Verification or error and
// records what it was asked.
type scriptedVerifier struct {
	cached decide.Answer
	v      Verification
	err    error
	since  []time.Time
}

func (s *scriptedVerifier) Cached(string, netip.Addr) decide.Answer { return s.cached }
func (s *scriptedVerifier) Verify(_ context.Context, _ string, _ netip.Addr, since time.Time) (Verification, error) {
	s.since = append(s.since, since)
	return s.v, s.err
}

// TestVerificationAnswers: the engine asks DNS anchored at the flow's
// first packet, and each answer shows in the decision: grace allows with
// dns_check grace, a mismatch says what DNS knew, a spent query budget is
// a limit.
func TestVerificationAnswers(t *testing.T) {
	ev := decide.Evidence{AnswerAge: 1500 * time.Millisecond, Addrs: 3, Requeried: true}
	for _, tc := range []struct {
		name    string
		sv      scriptedVerifier
		verdict policy.Verdict
		reason  policy.Reason
		check   declog.DNSCheck
		limit   Limit
	}{
		{"match", scriptedVerifier{v: Verification{Answer: decide.Match}}, policy.Allow, policy.ReasonRule, declog.CheckVerified, numLimits},
		{"grace", scriptedVerifier{cached: decide.Grace, v: Verification{Answer: decide.Grace}}, policy.Allow, policy.ReasonRule, declog.CheckGrace, numLimits},
		{"mismatch", scriptedVerifier{v: Verification{Answer: decide.Mismatch, Evidence: ev}}, policy.Deny, policy.ReasonDNSMismatch, declog.CheckNone, numLimits},
		{"budget", scriptedVerifier{err: ErrBudget}, policy.Deny, policy.ReasonLimit, declog.CheckNone, LimitResolver},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sv := tc.sv
			h := newHarness(t, labPolicy, func(c *Config) { c.Verifier = &sv })
			f := h.tcp(server, 443)
			start := h.clock.Now()
			f.syn()
			h.clock.Add(200 * time.Millisecond) // the hello comes later than the SYN
			id := f.send(clientHello(t, "allowed.example.test"))
			h.e.verifyWG.Wait()
			h.wantVerdict(id, tc.verdict)
			l := h.lastLine()
			if l.Verdict != tc.verdict || l.Reason != tc.reason || l.DNSCheck != tc.check {
				t.Fatalf("line %+v", l)
			}
			if len(sv.since) != 1 || !sv.since[0].Equal(start) {
				t.Errorf("Verify asked since %v, want the flow's first packet %v", sv.since, start)
			}
			if tc.reason == policy.ReasonDNSMismatch && (l.DNSAnswerAge != ev.AnswerAge || l.DNSAddrs != 3 || !l.DNSRequeried) {
				t.Errorf("a mismatch line without what DNS knew: %+v", l)
			}
			if tc.limit != numLimits && h.e.Stats().Limited(tc.limit) != 1 {
				t.Errorf("Limited(%s) = %d", tc.limit, h.e.Stats().Limited(tc.limit))
			}
		})
	}
}
