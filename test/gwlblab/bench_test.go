package gwlblab

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/testenv"
	"github.com/egressd/egressd/pkg/gwlb"
	"github.com/egressd/egressd/test/lab"
)

// BenchmarkGWLB compares, in one lab and one run, the GENEVE path through
// an egressd target (its rules, NFQUEUE for the first packets) with the
// same path through a plain forwarding target (the same GENEVE handler,
// no egressd rules): the throughput of one long allowed TCP flow, and new
// TLS flows per second, sequential, with their handshake latency. Both
// cross the fake load balancer, a Go program, twice per packet, so the
// absolute figures are the lab's; the ratios are the point. It runs once
// whatever b.N: make bench-lab runs it with -benchtime 1x.
func BenchmarkGWLB(b *testing.B) {
	testenv.RequireRoot(b)
	g := lab.StartGWLB(b, lab.GWLBOptions{Mode: "one-arm", Targets: 2})
	for i, plain := range []bool{false, true} {
		if _, err := g.StartTarget(i, lab.GWLBTargetOptions{Binary: egressdBin, Policy: policy, Plain: plain}); err != nil {
			b.Fatal(err)
		}
		if err := g.Fake.WaitHealth(i, true, 10*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	sink, err := g.Inet.Listen("tcp", net.JoinHostPort(lab.CIDRAddr, "9000"))
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	var received atomic.Int64
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					received.Add(int64(n))
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	const dur = 3 * time.Second
	next := 20000
	port := func(dst string, dport uint16, target int) int {
		for ; next < 60000; next++ {
			k := gwlb.Key{Src: netip.MustParseAddr(lab.ClientAddr).As4(), Dst: netip.MustParseAddr(dst).As4(), SrcPort: uint16(next), DstPort: dport, Proto: 6}
			if g.Fake.TargetFor(k) == target {
				next++
				return next - 1
			}
		}
		b.Fatal("out of ports")
		return 0
	}
	throughput := func(target int) float64 {
		c, err := dialFrom(g, port(lab.CIDRAddr, 9000, target), net.JoinHostPort(lab.CIDRAddr, "9000"))
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 64<<10)
		before := received.Load()
		start := time.Now()
		for time.Since(start) < dur {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(buf); err != nil {
				b.Fatalf("target %d: %v", target, err)
			}
		}
		c.Close()
		time.Sleep(200 * time.Millisecond) // the sink reads what is in flight
		return float64(received.Load()-before) / time.Since(start).Seconds() / 1e6
	}
	flows := func(target int) (perSec float64, p50 time.Duration) {
		var lat []time.Duration
		start := time.Now()
		for time.Since(start) < dur {
			t0 := time.Now()
			raw, err := dialFrom(g, port(lab.ServerAddr, 443, target), net.JoinHostPort(lab.ServerAddr, "443"))
			if err != nil {
				b.Fatalf("target %d: %v", target, err)
			}
			c := tls.Client(raw, &tls.Config{ServerName: "allowed.example.test", RootCAs: g.CA.Pool})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = c.HandshakeContext(ctx)
			cancel()
			c.Close()
			if err != nil {
				b.Fatalf("target %d: TLS: %v", target, err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		return float64(len(lat)) / time.Since(start).Seconds(), lat[len(lat)/2]
	}
	flows(0) // warm the DNS verification's cache
	fMB, pMB := throughput(0), throughput(1)
	fConn, fP50 := flows(0)
	pConn, pP50 := flows(1)
	b.ReportMetric(fMB, "egressd_MB/s")
	b.ReportMetric(pMB, "plain_MB/s")
	b.ReportMetric(fMB/pMB, "throughput_ratio")
	b.ReportMetric(fConn, "egressd_conn/s")
	b.ReportMetric(pConn, "plain_conn/s")
	b.ReportMetric(fConn/pConn, "conn_ratio")
	b.ReportMetric(float64(fP50.Microseconds()), "egressd_p50_us")
	b.ReportMetric(float64(pP50.Microseconds()), "plain_p50_us")
	if d, err := g.Metric(0, `egressd_gwlb_packets_total{direction="decapsulated"}`); err == nil {
		b.Logf("egressd target: %v packets decapsulated; fake refused %d", d,
			g.Fake.Stats.RejectHeader.Load()+g.Fake.Stats.RejectPort.Load()+g.Fake.Stats.RejectAddr.Load())
	}
}
