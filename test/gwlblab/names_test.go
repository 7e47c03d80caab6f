package gwlblab

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/test/lab"
)

// TestNamesThroughGWLB: behind the fake load balancer, in both topologies,
// an allowed name passes and a denied one does not, whether it is read
// from a TLS ClientHello's SNI, an HTTP Host header or a QUIC Initial;
// each decision is logged by the target the flow was hashed to, and every
// reply the targets send back is one the load balancer accepts.
func TestNamesThroughGWLB(t *testing.T) {
	for _, mode := range []string{"one-arm", "two-arm"} {
		t.Run(mode, func(t *testing.T) {
			g := start(t, mode, 2, lab.GWLBTargetOptions{})
			if err := g.StartQUIC(); err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t, 60*time.Second)

			if r := g.Curl(ctx, "https://allowed.example.test/", "allowed.example.test", "443", lab.ServerAddr); r.Exit != 0 || !strings.Contains(r.Stdout, "allowed.example.test served by") {
				t.Errorf("allowed SNI: %v", r)
			}
			decision(t, g, named("allowed.example.test", "sni", "allow"))
			if r := g.Curl(ctx, "https://denied.example.test/", "denied.example.test", "443", lab.OtherAddr); r.Exit == 0 {
				t.Errorf("denied SNI passed: %v", r)
			}
			decision(t, g, named("denied.example.test", "sni", "deny"))

			if r := g.Curl(ctx, "http://allowed.example.test/", "allowed.example.test", "80", lab.ServerAddr); r.Exit != 0 || !strings.Contains(r.Stdout, "served by") {
				t.Errorf("allowed Host: %v", r)
			}
			decision(t, g, named("allowed.example.test", "host", "allow"))
			if r := g.Curl(ctx, "http://denied.example.test/", "denied.example.test", "80", lab.OtherAddr); r.Exit == 0 {
				t.Errorf("denied Host passed: %v", r)
			}
			decision(t, g, named("denied.example.test", "host", "deny"))

			if body, err := g.H3Get(ctx, "allowed.example.test", lab.ServerAddr, 1); err != nil || !strings.Contains(body, "served by") {
				t.Errorf("allowed QUIC: %q %v", body, err)
			}
			decision(t, g, named("allowed.example.test", "quic", "allow"))
			if body, err := g.H3Get(ctx, "denied.example.test", lab.OtherAddr, 1); err == nil {
				t.Errorf("denied QUIC passed: %q", body)
			}
			decision(t, g, named("denied.example.test", "quic", "deny"))

			if slices.Contains(g.Servers.SNIs(), "denied.example.test") {
				t.Errorf("a server saw the denied name: %v", g.Servers.SNIs())
			}
			noRefusals(t, g)
			if g.Fake.Stats.Accepted.Load() == 0 {
				t.Error("the fake accepted no reply")
			}
		})
	}
}
