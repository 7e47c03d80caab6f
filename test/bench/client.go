package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The load generator runs as its own process inside the lab's client
// namespace (ip netns exec ... benchlab client), so its sockets are
// ordinary ones: no OS thread locked into a namespace per dial, and its CPU
// is apart from the servers' (they run in the orchestrator's process).

// Hello variants: which key shares the ClientHello carries.
const (
	helloMLKEM  = "mlkem"  // Go's default: X25519MLKEM768 and X25519 shares, more than one segment
	helloX25519 = "x25519" // X25519 only: a ClientHello of one segment
)

// clientOpts are the client subcommand's parameters.
type clientOpts struct {
	Addr     string        // server address
	SNI      string        // server name
	CAFile   string        // PEM of the lab's CA
	Hello    string        // helloMLKEM or helloX25519
	Workers  int           // concurrent connections
	Warmup   time.Duration // run, not counted
	Duration time.Duration // counted
	HTTP     bool          // one GET after the handshake, read to EOF
	Sources  []string      // local addresses, used in turn
	Timeout  time.Duration // per connection
}

// clientResult is what the client prints (JSON) for the orchestrator.
type clientResult struct {
	Conns  int           `json:"conns"`     // completed in the measured window
	Window time.Duration `json:"window_ns"` // the measured window
	P50    time.Duration `json:"p50_ns"`    // handshake latency, connect start to handshake done
	P99    time.Duration `json:"p99_ns"`    //
	// ConnectP50 is the median of connect alone (SYN to SYN-ACK, as
	// the client sees it): the part of P50 a SYN's trip adds to.
	ConnectP50 time.Duration `json:"connect_p50_ns"`
	Mean       time.Duration `json:"mean_ns"`     //
	Errors     int           `json:"errors"`      // failed connections, whole run
	ErrSample  string        `json:"err_sample"`  // the first error
	Handshakes int           `json:"handshakes"`  // completed handshakes, whole run (warm-up and tail too)
	Dials      int           `json:"dials"`       // connections attempted, whole run
	HelloBytes int           `json:"hello_bytes"` // size of the first TLS record the client sends
	// Reused counts connections whose local address and port were used
	// less than reuseWindow before, while egressd still remembers the
	// earlier flow's decision (it reads the new one's hello all the same:
	// a new ISN is a new flow).
	Reused int `json:"reused_tuples"`
}

// reuseWindow is longer than egressd's default linger (10s).
const reuseWindow = 15 * time.Second

func parseClientFlags(args []string) (clientOpts, error) {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	var o clientOpts
	var sources string
	fs.StringVar(&o.Addr, "addr", "", "server address host:port")
	fs.StringVar(&o.SNI, "sni", "", "server name")
	fs.StringVar(&o.CAFile, "ca", "", "CA certificate (PEM)")
	fs.StringVar(&o.Hello, "hello", helloMLKEM, "key shares: mlkem (Go's default) or x25519")
	fs.IntVar(&o.Workers, "workers", 1, "concurrent connections")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "warm-up, not counted")
	fs.DurationVar(&o.Duration, "duration", 5*time.Second, "measured time")
	fs.BoolVar(&o.HTTP, "http", true, "send one GET after the handshake and read the response")
	fs.StringVar(&sources, "src", "", "comma-separated local addresses to use in turn")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Second, "per-connection deadline")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if sources != "" {
		o.Sources = strings.Split(sources, ",")
	}
	if o.Addr == "" || o.SNI == "" || o.CAFile == "" || o.Workers < 1 || o.Duration <= 0 {
		return o, errors.New("client: -addr, -sni, -ca, -workers >= 1 and -duration > 0 are required")
	}
	return o, nil
}

// tlsConfig is the client's TLS config for a hello variant: TLS 1.3, no
// session cache (every connection is a full handshake).
func tlsConfig(hello, sni string, roots *x509.CertPool) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: sni, RootCAs: roots, MinVersion: tls.VersionTLS13}
	switch hello {
	case helloMLKEM:
		// nil CurvePreferences: Go's default, X25519MLKEM768 first.
	case helloX25519:
		cfg.CurvePreferences = []tls.CurveID{tls.X25519}
	default:
		return nil, fmt.Errorf("hello %q: want %s or %s", hello, helloMLKEM, helloX25519)
	}
	return cfg, nil
}

// helloSize returns the size of the first TLS record a client with cfg
// sends, by running a handshake into a pipe.
func helloSize(cfg *tls.Config) (int, error) {
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		_ = tls.Client(c, cfg.Clone()).Handshake()
		c.Close()
	}()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(s, hdr); err != nil {
		return 0, err
	}
	return 5 + int(binary.BigEndian.Uint16(hdr[3:5])), nil
}

// runClient opens connections for warm-up + duration and reports.
func runClient(ctx context.Context, o clientOpts) (clientResult, error) {
	pem, err := os.ReadFile(o.CAFile)
	if err != nil {
		return clientResult{}, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return clientResult{}, fmt.Errorf("%s: no certificate", o.CAFile)
	}
	cfg, err := tlsConfig(o.Hello, o.SNI, roots)
	if err != nil {
		return clientResult{}, err
	}
	var res clientResult
	if res.HelloBytes, err = helloSize(cfg); err != nil {
		return res, fmt.Errorf("measure ClientHello: %w", err)
	}
	var srcs []net.IP
	for _, s := range o.Sources {
		ip := net.ParseIP(s)
		if ip == nil {
			return res, fmt.Errorf("bad source address %q", s)
		}
		srcs = append(srcs, ip)
	}
	request := []byte("GET / HTTP/1.1\r\nHost: " + o.SNI + "\r\nUser-Agent: egressd-benchlab\r\nConnection: close\r\n\r\n")

	start := time.Now()
	from, until := start.Add(o.Warmup), start.Add(o.Warmup+o.Duration)
	var (
		mu        sync.Mutex
		lats      []time.Duration
		conns     []time.Duration
		errSample string
		lastUse   = map[string]time.Time{} // local address:port
		reused    int
		seq       atomic.Uint64
		dials     atomic.Int64
		hs        atomic.Int64
		errs      atomic.Int64
		wg        sync.WaitGroup
	)
	for range o.Workers {
		wg.Go(func() {
			mine := make([]time.Duration, 0, 1<<14)
			myConns := make([]time.Duration, 0, 1<<14)
			buf := make([]byte, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(until) {
					break
				}
				var src net.IP
				if len(srcs) > 0 {
					src = srcs[seq.Add(1)%uint64(len(srcs))]
				}
				dials.Add(1)
				lat, conn, local, err := oneConn(ctx, o, cfg, src, request, buf)
				if local != "" {
					mu.Lock()
					if last, ok := lastUse[local]; ok && t0.Sub(last) < reuseWindow {
						reused++
					}
					lastUse[local] = t0
					mu.Unlock()
				}
				if err != nil {
					if errs.Add(1) == 1 {
						mu.Lock()
						errSample = err.Error()
						mu.Unlock()
					}
					continue
				}
				hs.Add(1)
				if !t0.Before(from) && time.Now().Before(until) {
					mine = append(mine, lat)
					myConns = append(myConns, conn)
				}
			}
			mu.Lock()
			lats = append(lats, mine...)
			conns = append(conns, myConns...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	slices.Sort(lats)
	slices.Sort(conns)
	res.ConnectP50 = percentile(conns, 50)
	res.Conns = len(lats)
	res.Window = o.Duration
	res.P50, res.P99 = percentile(lats, 50), percentile(lats, 99)
	if len(lats) > 0 {
		var sum time.Duration
		for _, l := range lats {
			sum += l
		}
		res.Mean = sum / time.Duration(len(lats))
	}
	res.Errors, res.ErrSample = int(errs.Load()), errSample
	res.Handshakes, res.Dials = int(hs.Load()), int(dials.Load())
	res.Reused = reused
	return res, nil
}

// bindNoPort lets connect(2) pick the local port for the whole 4-tuple
// after a bind to an address (IP_BIND_ADDRESS_NO_PORT), instead of bind(2)
// picking one that must be free for every destination.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	return errors.Join(err, serr)
}

var httpOK = []byte("HTTP/1.1 200 ")

// oneConn opens one connection from src, completes the TLS handshake,
// optionally fetches / (the server closes: Connection: close, so the
// client is left without TIME_WAIT sockets), and closes. It returns the
// time from connect start to handshake done, the time connect took, and
// the local address once connected.
func oneConn(ctx context.Context, o clientOpts, cfg *tls.Config, src net.IP, request, buf []byte) (lat, conn time.Duration, local string, err error) {
	d := net.Dialer{Timeout: o.Timeout}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
		d.Control = bindNoPort
	}
	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return 0, 0, "", err
	}
	conn = time.Since(start)
	defer c.Close()
	local = c.LocalAddr().String()
	if err := c.SetDeadline(start.Add(o.Timeout)); err != nil {
		return 0, 0, local, err
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return 0, 0, local, fmt.Errorf("handshake: %w", err)
	}
	lat = time.Since(start)
	if !o.HTTP {
		// Closed without reading the server's session tickets: the
		// kernel may answer them with a reset.
		return lat, conn, local, nil
	}
	if _, err := tc.Write(request); err != nil {
		return 0, 0, local, fmt.Errorf("request: %w", err)
	}
	n := 0
	for {
		m, err := tc.Read(buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, 0, local, fmt.Errorf("response: %w", err)
		}
		if n == len(buf) {
			return 0, 0, local, errors.New("response: longer than expected")
		}
	}
	if !bytes.HasPrefix(buf[:n], httpOK) {
		return 0, 0, local, fmt.Errorf("response: %q", buf[:min(n, 40)])
	}
	// The server closed first (close_notify, FIN); close the socket
	// without an alert the server would only answer with a reset.
	return lat, conn, local, nil
}

// clientMain is the client subcommand: it prints one JSON clientResult.
func clientMain(ctx context.Context, args []string) int {
	o, err := parseClientFlags(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	res, err := runClient(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}
	return 0
}
