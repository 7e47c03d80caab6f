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

			for _, c := range []struct {
				scheme, port, from string
			}{{"https", "443", "sni"}, {"http", "80", "host"}} {
				for _, n := range []struct{ name, addr, verdict string }{
					{"allowed.example.test", lab.ServerAddr, "allow"}, {"denied.example.test", lab.OtherAddr, "deny"},
				} {
					r := g.Curl(ctx, c.scheme+"://"+n.name+"/", n.name, c.port, n.addr)
					if passed := r.Exit == 0 && strings.Contains(r.Stdout, n.name+" served by"); passed != (n.verdict == "allow") {
						t.Errorf("%s %s (%s): %v", n.verdict, c.from, n.name, r)
					}
					decision(t, g, named(n.name, c.from, n.verdict))
				}
			}

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
