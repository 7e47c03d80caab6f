package halab

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/test/fakeec2"
	"github.com/egressd/egressd/test/lab"
)

// routeChanges are the successful changes of the client's route table
// after t: when, and to whom.
func (h *haLab) routeChanges(after time.Time) []fakeec2.Call {
	var out []fakeec2.Call
	for _, c := range h.p.EC2.CallsOf("ReplaceRoute", true) {
		if c.At.After(after) && c.Params.Get("RouteTableId") == lab.ClientTable {
			out = append(out, c)
		}
	}
	return out
}

// TestSplitBrain: both members ready, each unable to see the other (every
// packet between them dropped, health checks and sync alike), both able to
// reach EC2. The routes change at most once per hold-down, the waits grow
// (no flapping), a denied name stays denied throughout, and once the
// members see each other again the routes settle on the preferred member.
func TestSplitBrain(t *testing.T) {
	h := startHA(t, fast)
	deny := startProber(h.l, "denied.example.test", lab.OtherAddr, 50*time.Millisecond)
	t0 := time.Now()
	if err := h.p.Isolate(true); err != nil {
		t.Fatal(err)
	}
	const window = 11 * time.Second
	time.Sleep(window)
	split := h.routeChanges(t0)
	if err := h.p.Isolate(false); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	// Healed: the preferred member ends up active, then nothing moves.
	h.waitSteady(h.a)
	settled := time.Now()
	time.Sleep(2 * h.tm.holdDown)
	checkNeverOpen(t, h, deny.Stop())

	var at []string
	for i, c := range split {
		at = append(at, c.At.Sub(t0).Round(time.Millisecond).String()+" to "+c.Params.Get("NetworkInterfaceId"))
		if i == 0 {
			continue
		}
		if gap := c.At.Sub(split[i-1].At); gap < h.tm.holdDown {
			t.Errorf("route changes %s apart during the split, under the %s hold-down", gap, h.tm.holdDown)
		}
	}
	t.Logf("split brain for %s: %d route changes: %v", window, len(split), at)
	if len(split) == 0 {
		t.Error("no member took the routes from a peer it could not see")
	}
	// b at once (a seems dead), a back after 2 hold-downs (it was deposed
	// while ready and blind), b after 2 more, then 4 each: within 11 s, 3.
	if len(split) > 3 {
		t.Errorf("%d route changes in %s of split brain: the waits do not grow", len(split), window)
	}
	if len(split) >= 3 && split[2].At.Sub(split[1].At) < 2*h.tm.holdDown {
		t.Errorf("the third change came %s after the second: under 2 hold-downs", split[2].At.Sub(split[1].At))
	}
	after := h.routeChanges(settled)
	if len(after) > 0 {
		t.Errorf("%d route changes after the pair settled", len(after))
	}
	t.Logf("healed: a active again %s after the members saw each other", settled.Sub(healed).Round(time.Millisecond))
}

// TestEC2Trouble: the EC2 API throttles every call, then fails every
// ReplaceRoute, while the active member is dead. The standby does not
// guess (nothing moves), does not crash, and retries with growing waits up
// to ec2.max_backoff; once the API answers, it takes over.
func TestEC2Trouble(t *testing.T) {
	h := startHA(t, fast)
	deny := startProber(h.l, "denied.example.test", lab.OtherAddr, 50*time.Millisecond)
	h.p.EC2.Inject(fakeec2.Fault{Code: fakeec2.Throttled, Count: -1})
	t0 := time.Now()
	h.kill(h.a)
	time.Sleep(4 * time.Second)
	if !h.onMember(h.a) {
		t.Fatal("the routes or the EIP moved while every EC2 call was throttled")
	}
	select {
	case <-h.b.agent.Exited():
		t.Fatalf("b's agent exited: %v", h.b.agent.ExitErr())
	default:
	}
	waits := h.retryWaits(t0)
	t.Logf("b's retries while throttled, waits (ms): %v", waits)
	if len(waits) < 4 || waits[0] > 300 || waits[len(waits)-1] < 800 {
		t.Errorf("retry waits %v ms: want them growing from about the interval to the 1 s max_backoff (±20%%)", waits)
	}
	var fromB int
	for _, c := range h.p.EC2.Calls() {
		if c.At.After(t0) && strings.HasPrefix(c.From, lab.StandbyPublic+":") {
			fromB++
		}
	}
	if fromB > 20 {
		t.Errorf("b made %d calls in 4 s of throttling: not backing off", fromB)
	}

	// Reads answer, route changes fail: still nothing moves.
	h.p.EC2.Clear()
	t1 := time.Now()
	h.p.EC2.Inject(fakeec2.Fault{Action: "ReplaceRoute", Code: "InternalError", Count: -1})
	time.Sleep(3 * time.Second)
	if !h.onMember(h.a) {
		t.Fatal("the routes or the EIP moved while every ReplaceRoute failed")
	}
	if n := len(h.p.EC2.CallsOf("ReplaceRoute", false)); n == 0 {
		t.Error("b never tried to move the routes once it could read them")
	}
	if n := len(h.p.EC2.CallsOf("AssociateAddress", false)); n != 0 {
		t.Errorf("b moved the EIP (%d calls) though it could not move the routes", n)
	}

	// The API answers: b takes over.
	h.p.EC2.Clear()
	t2 := time.Now()
	took := h.waitOn(h.b, 3*time.Second)
	t.Logf("b took over %s after the API answered again (throttled %s, failing %s before)",
		took.Round(time.Millisecond), t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond))
	checkNeverOpen(t, h, deny.Stop())
}

// retryWaits are the waits b's agent logged between failed EC2 calls
// after t (retry_in_ms).
func (h *haLab) retryWaits(after time.Time) []int {
	var out []int
	for _, l := range h.b.agent.Lines() {
		if !strings.Contains(l.Text, `"msg":"EC2 API call failed; nothing moves until it answers"`) || l.At.Before(after) {
			continue
		}
		var rec struct {
			RetryMS int `json:"retry_in_ms"`
		}
		if json.Unmarshal([]byte(l.Text), &rec) == nil {
			out = append(out, rec.RetryMS)
		}
	}
	return out
}
