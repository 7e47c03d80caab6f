package halab

import (
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/test/lab"
)

// TestSyncCarriesVerdictAndNAT: a connection the active member allowed,
// and one it denied, are in the standby's kernel table (conntrack -L
// there) with egressd's connmark (allow 0x1, deny 0x2) and the NAT
// mapping to the EIP, while the traffic crosses only the active member.
func TestSyncCarriesVerdictAndNAT(t *testing.T) {
	h := startHA(t, fast)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// An allowed connection, kept open.
	c, err := h.l.Client.DialContext(ctx, "tcp", net.JoinHostPort(lab.ServerAddr, "443"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, &tls.Config{RootCAs: h.l.CA.Pool, ServerName: "allowed.example.test"})
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatalf("allowed handshake through a: %v", err)
	}
	sport := c.LocalAddr().(*net.TCPAddr).Port
	// A denied one: reset.
	d, err := h.l.Client.DialContext(ctx, "tcp", net.JoinHostPort(lab.OtherAddr, "443"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := tls.Client(d, &tls.Config{RootCAs: h.l.CA.Pool, ServerName: "denied.example.test"}).HandshakeContext(ctx); err == nil {
		t.Fatal("denied handshake completed")
	}
	if _, err := h.a.egressd.WaitDecision(func(x lab.Decision) bool { return x.Name == "denied.example.test" }, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	wantAllowed := []string{"src=" + lab.ClientAddr, "dst=" + lab.ServerAddr, "sport=" + strconv.Itoa(sport),
		"src=" + lab.ServerAddr + " dst=" + lab.EIP, "mark=1"}
	var onB, deniedOnB string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		onB, _ = conntrackTo(h.b, lab.ServerAddr)
		deniedOnB, _ = conntrackTo(h.b, lab.OtherAddr)
		if containsAll(onB, wantAllowed...) && strings.Contains(deniedOnB, "mark=2") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !containsAll(onB, wantAllowed...) {
		t.Errorf("b's kernel table lacks the allowed connection with its mark and NAT mapping (want %q):\n%s", wantAllowed, onB)
	}
	if !strings.Contains(deniedOnB, "mark=2") || !strings.Contains(deniedOnB, "dst="+lab.EIP) {
		t.Errorf("b's kernel table lacks the denied connection with mark 2:\n%s", deniedOnB)
	}
	onA, _ := conntrackTo(h.a, lab.ServerAddr)
	t.Logf("a: %s\nb: %s\nb (denied): %s", strings.TrimSpace(onA), strings.TrimSpace(onB), strings.TrimSpace(deniedOnB))
	if n := len(h.b.egressd.Decisions()); n != 0 {
		t.Errorf("b decided %d flows while standby", n)
	}
	// egressd ha status, on a: both members, who the routes and the EIP name.
	out, err := h.a.Exec(egressdBin, "ha", "status", "--config", h.a.cfg)
	for _, want := range []string{"a       active", "b       standby", lab.ClientTable + " 0.0.0.0/0 -> eni-0a (a)",
		lab.TaggedTable + " 0.0.0.0/0 -> eni-0a (a)", "elastic IP " + lab.EIP + " -> eni-0a " + lab.FloatingIP + " (a)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("egressd ha status (%v) lacks %q:\n%s", err, want, out)
		}
	}
	if err != nil || strings.Contains(string(out), "WARNING") {
		t.Errorf("egressd ha status on a steady pair: %v\n%s", err, out)
	}
	t.Logf("egressd ha status:\n%s", out)
	// b's /status reads conntrackd's counters every rules_every (1s).
	deadline = time.Now().Add(3 * time.Second)
	for {
		st, err := h.status(h.b)
		if err == nil && st.Sync != nil && st.Sync.Running && st.Sync.Injected+st.Sync.Updated > 0 {
			break
		}
		if time.Now().After(deadline) {
			raw, _ := h.b.Exec("conntrackd", "-C", h.b.Dir+"/conntrackd.conf", "-s")
			t.Errorf("b's status does not show conntrackd injecting: %+v %v\nconntrackd -s:\n%s", st.Sync, err, raw)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
