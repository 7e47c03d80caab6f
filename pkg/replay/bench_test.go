package replay

import (
	"bytes"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/pcapgen"
	"github.com/egressd/egressd/pkg/policy"
)

// manyFlows writes n interleaved flows (TLS with a download, HTTP, SSH to
// an address rule) to a pcap, 64 in progress at once.
func manyFlows(tb testing.TB, n, reply int) []byte {
	tb.Helper()
	return capture(tb, func(w *pcapgen.Writer) {
		queues := make([][][]byte, 64)
		started := 0
		for {
			progress := false
			for i := range queues {
				if len(queues[i]) == 0 && started < n {
					var c pcapgen.Collector
					cl := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(started >> 8), byte(started)}), uint16(10000+started%50000))
					switch started % 10 {
					case 0, 1, 2, 3, 4, 5:
						cn := pcapgen.NewConn(&c, cl, ap(server, 443), uint16(started))
						must(tb, cn.Handshake())
						must(tb, cn.Send(hello(tb, []string{"allowed.example.test", "denied.example.test", "x.api.example.test"}[started%3]), 1448))
						must(tb, cn.Reply(reply))
						must(tb, cn.Close())
					case 6, 7, 8:
						cn := pcapgen.NewConn(&c, cl, ap(server, 80), uint16(started))
						must(tb, cn.Handshake())
						must(tb, cn.Send([]byte("GET / HTTP/1.1\r\nHost: allowed.example.test\r\n\r\n"), 0))
						must(tb, cn.Reply(reply))
						must(tb, cn.Close())
					default:
						cn := pcapgen.NewConn(&c, cl, ap(partner, 22), uint16(started))
						must(tb, cn.Handshake())
						must(tb, cn.Reply(reply))
						must(tb, cn.Close())
					}
					queues[i] = c
					started++
				}
				if len(queues[i]) > 0 {
					must(tb, w.Frame(queues[i][0]))
					queues[i] = queues[i][1:]
					progress = true
				}
			}
			if !progress {
				return
			}
		}
	})
}

// BenchmarkReplay is replay's cost over a whole capture: reading,
// tracking, and the engine for each flow's head. MB/s is of capture; the
// flows/s metric is what a capture with these flows' sizes replays at.
func BenchmarkReplay(b *testing.B) {
	pol := mustPolicy(b, testPolicy)
	for _, tc := range []struct {
		name     string
		flows    int
		reply    int
		opts     Options
		baseline bool
	}{
		{"heads only", 2000, 0, Options{}, false},
		{"with 20KB downloads", 1000, 20000, Options{}, false},
		{"with 20KB downloads, --resolve", 1000, 20000, Options{Resolve: Answers{"allowed.example.test": {server}, "x.api.example.test": {server}}}, false},
		{"with 20KB downloads, --baseline", 1000, 20000, Options{}, true},
	} {
		in := manyFlows(b, tc.flows, tc.reply)
		var base *policy.Policy
		if tc.baseline {
			base = pol
		}
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			start := time.Now()
			for range b.N {
				sum, err := Run(bytes.NewReader(in), io.Discard, pol, base, tc.opts)
				if err != nil || sum.Flows != tc.flows {
					b.Fatalf("%v, %d flows", err, sum.Flows)
				}
			}
			b.ReportMetric(float64(tc.flows*b.N)/time.Since(start).Seconds(), "flows/s")
		})
	}
}

// TestConnTableBound: the connection table stays within MaxConns. Past it
// the least recently seen decided connection is forgotten; while the bound
// exceeds the connections in progress, nothing else changes.
func TestConnTableBound(t *testing.T) {
	pol := mustPolicy(t, testPolicy)
	in := manyFlows(t, 1000, 3000) // 64 in progress at once
	for _, tc := range []struct {
		name          string
		max           int
		wantMidstream bool
	}{
		{"room for the flows in progress", 100, false},
		// Like a NAT whose table overflowed: connections in progress are
		// forgotten, and their next packets look midstream.
		{"less room than flows in progress", 32, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sum, err := Run(bytes.NewReader(in), io.Discard, pol, nil, Options{MaxConns: tc.max})
			if err != nil {
				t.Fatal(err)
			}
			if sum.Flows != 1000 || sum.Evicted < uint64(1000-tc.max) || (sum.Midstream > 0) != tc.wantMidstream {
				t.Errorf("summary %+v", sum)
			}
		})
	}
}

// TestProgress: the callback sees the input read so far, to its end.
func TestProgress(t *testing.T) {
	in := manyFlows(t, 1000, 3000)
	var calls []Progress
	_, err := Run(bytes.NewReader(in), io.Discard, mustPolicy(t, testPolicy), nil,
		Options{Progress: func(p Progress) { calls = append(calls, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) < 2 {
		t.Fatalf("%d progress calls for %d bytes", len(calls), len(in))
	}
	for i := 1; i < len(calls); i++ {
		if calls[i].Bytes < calls[i-1].Bytes || calls[i].Packets < calls[i-1].Packets {
			t.Errorf("progress went backwards: %+v then %+v", calls[i-1], calls[i])
		}
	}
	if last := calls[len(calls)-1]; last.Bytes != int64(len(in)) || last.Flows != 1000 {
		t.Errorf("last progress %+v, input %d bytes", last, len(in))
	}
}
