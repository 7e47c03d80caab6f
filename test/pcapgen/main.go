// Command pcapgen writes a synthetic capture of many flows, for measuring
// `egressd replay`: TLS and HTTP flows with downloads, SSH to an address
// rule, UDP that is not QUIC, and flows whose start is missing, interleaved
// as a busy NAT's private side would see them. The names and addresses
// match test/pcapgen/policy.yaml. It writes a file and opens no socket.
//
// Usage:
//
//	go run ./test/pcapgen -o /tmp/big.pcap -size 1GiB
//	/usr/bin/time -v egressd replay --policy test/pcapgen/policy.yaml \
//	    --resolve @test/pcapgen/resolve.txt /tmp/big.pcap > /dev/null
//
// Measured on the project's machine (2 shared vCPUs, the file in the page
// cache, median of 3 runs):
//
//	-size 1GiB (downloads up to 40 KB): 48689 flows, 1.36M packets:
//	    1.55 s, 660 MiB/s, 31k flows/s, peak RSS 80 MiB
//	-size 1GiB -reply 1000: 536168 flows, 4.88M packets:
//	    7.5 s, 137 MiB/s, 72k flows/s, peak RSS 250 MiB (replay's
//	    connection table at its bound, 262144)
//	the second with --baseline (two engines): 11.7 s, peak RSS 530 MiB
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/pcapgen"
)

func main() {
	out := flag.String("o", "", "the capture to write (required)")
	size := flag.String("size", "100MiB", "stop after this many bytes of capture (KiB, MiB, GiB suffixes)")
	active := flag.Int("concurrent", 256, "flows in progress at once (their packets interleave)")
	seed := flag.Uint64("seed", 1, "random seed: the same seed writes the same file")
	reply := flag.Int("reply", 40000, "the largest download after a flow's head, in bytes (downloads are 0..reply)")
	flag.Parse()
	limit, err := parseSize(*size)
	if *out == "" || err != nil || *active < 1 || *reply < 0 {
		fmt.Fprintln(os.Stderr, "usage: pcapgen -o FILE [-size 1GiB] [-concurrent 256] [-reply 40000] [-seed 1]")
		os.Exit(2)
	}
	maxReply = *reply
	if err := generate(*out, limit, *active, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "pcapgen:", err)
		os.Exit(1)
	}
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			s, mult = n, m
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w *bufio.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

var (
	maxReply   = 40000
	webServer  = netip.MustParseAddr("203.0.113.10")
	otherWeb   = netip.MustParseAddr("203.0.113.11")
	partner    = netip.MustParseAddr("198.51.100.9")
	tlsNames   = []string{"allowed.example.test", "x.api.example.test", "y.api.example.test", "denied.example.test", "unlisted.example.com", ""}
	httpHosts  = []string{"allowed.example.test", "z.api.example.test", "paste.example.org"}
	notQUIC    = []byte("this is not a QUIC Initial, whatever it is")
	sshBanner  = []byte("SSH-2.0-OpenSSH_9.6\r\n")
	hostFormat = "GET /download/%d HTTP/1.1\r\nHost: %s\r\nUser-Agent: pcapgen\r\nAccept: */*\r\n\r\n"
)

// flowPackets writes one flow's packets, of a kind chosen at random.
func flowPackets(r *rand.Rand, n int) ([][]byte, error) {
	var c pcapgen.Collector
	host := n/60000 + 1 // a new client address every 60000 flows: no 5-tuple repeats
	client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(host >> 16), byte(host >> 8), byte(host)}), uint16(2000+n%60000))
	reply := r.IntN(maxReply + 1)
	conn := func(dst netip.Addr, port uint16) *pcapgen.Conn {
		return pcapgen.NewConn(&c, client, netip.AddrPortFrom(dst, port), uint16(n))
	}
	var err error
	switch k := r.IntN(100); {
	case k < 60: // TLS
		dst := webServer
		if k < 5 {
			dst = otherWeb // a name at an address it does not resolve to
		}
		hello, herr := pcapgen.ClientHello(tlsNames[r.IntN(len(tlsNames))])
		if herr != nil {
			return nil, herr
		}
		cn := conn(dst, 443)
		err = errorsJoin(cn.Handshake(), cn.Send(hello, 1448), cn.Reply(reply), cn.Close())
	case k < 80: // HTTP
		cn := conn(webServer, 80)
		req := fmt.Sprintf(hostFormat, n, httpHosts[r.IntN(len(httpHosts))])
		err = errorsJoin(cn.Handshake(), cn.Send([]byte(req), 0), cn.Reply(reply), cn.Close())
	case k < 90: // SSH to an address rule: decided on the SYN
		cn := conn(partner, 22)
		err = errorsJoin(cn.Handshake(), cn.Send(sshBanner, 0), cn.Reply(reply/4), cn.Close())
	case k < 95: // UDP 443 that is not QUIC
		for i := 0; i < 3; i++ {
			err = c.Frame(pcapgen.UDP(client, netip.AddrPortFrom(webServer, 443), uint16(n+i), notQUIC))
		}
	default: // the capture starts inside the flow: only the download
		cn := conn(webServer, 443)
		err = errorsJoin(cn.Reply(reply), cn.Close())
	}
	return c, err
}

func errorsJoin(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func generate(path string, limit int64, concurrent int, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	cw := &countingWriter{w: bufio.NewWriterSize(f, 1<<20)}
	w, err := pcapgen.NewWriter(cw, time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC))
	if err != nil {
		return err
	}
	w.Step = 20 * time.Microsecond // about 300 Mbit/s
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	queues := make([][][]byte, concurrent)
	flows := 0
	for cw.n < limit {
		for i := range queues {
			if len(queues[i]) == 0 {
				if queues[i], err = flowPackets(r, flows); err != nil {
					return err
				}
				flows++
			}
			if err := w.Frame(queues[i][0]); err != nil {
				return err
			}
			queues[i] = queues[i][1:]
		}
	}
	if err := cw.w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "pcapgen: %s: %d flows started, %d bytes\n", path, flows, cw.n)
	return f.Close()
}
