package gwlb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Config configures a Handler.
type Config struct {
	Listen    netip.AddrPort // where the load balancer sends GENEVE; 0.0.0.0:6081 by default
	Interface string         // the tun device; "gwlb0" by default
	// MTU of the device: the load balancer's 8,500 by default, so that the
	// kernel never routes a larger packet to it.
	MTU int
	// Readers is the number of UDP sockets (SO_REUSEPORT) and tun queues,
	// each with its own goroutines; 0: 2.
	Readers int
	// Endpoints, if not empty, are the only endpoint ids (option type 1)
	// served; a datagram from another is dropped (unknown_endpoint).
	Endpoints []uint64
	// Flows bounds the cache of return paths; 0: 65536.
	Flows int
	// TCPIdle and Idle are how long the load balancer keeps an idle flow
	// (its listener's TCP idle timeout, 350 s by default; 120 s for other
	// protocols): a return path is forgotten after that.
	TCPIdle, Idle time.Duration
	Logger        *slog.Logger
}

func (c *Config) setDefaults() {
	if !c.Listen.IsValid() {
		c.Listen = netip.AddrPortFrom(netip.IPv4Unspecified(), Port)
	}
	if c.Interface == "" {
		c.Interface = "gwlb0"
	}
	if c.MTU == 0 {
		c.MTU = MaxInner
	}
	if c.Readers <= 0 {
		c.Readers = 2
	}
	if c.Flows <= 0 {
		c.Flows = 65536
	}
	if c.TCPIdle <= 0 {
		c.TCPIdle = 350 * time.Second
	}
	if c.Idle <= 0 {
		c.Idle = 120 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Drop is why a packet was dropped.
type Drop uint8

const (
	DropMalformed       Drop = iota // not GENEVE as the load balancer sends it: truncated, bad version or options, OAM, too long a header, a bad inner header
	DropNoOptions                   // one of the load balancer's options (endpoint, attachment, cookie) is missing
	DropCritical                    // an unknown critical option (RFC 8926 section 3.5.1)
	DropProtocol                    // neither IPv4 nor IPv6, or the inner packet's version disagrees
	DropOversize                    // an inner packet over 8,500 bytes, either way
	DropUnknownEndpoint             // an endpoint not in Config.Endpoints
	DropIPv6                        // IPv6 inside GENEVE: egressd does not filter IPv6, so it is never forwarded
	DropNoFlow                      // toward the load balancer, a flow that never came in from it
	DropCacheFull                   // a new flow while the cache of return paths is full
	DropSend                        // the reply could not be sent (raw socket error)
	DropTun                         // the tun device refused the inner packet
	numDrops
)

var dropNames = [numDrops]string{"malformed", "no_options", "critical_option", "protocol", "oversize",
	"unknown_endpoint", "ipv6", "no_flow", "cache_full", "send_error", "tun_error"}

func (d Drop) String() string {
	if d < numDrops {
		return dropNames[d]
	}
	return "unknown(" + strconv.Itoa(int(d)) + ")"
}

// Drops lists every Drop, for metrics.
func Drops() []Drop {
	out := make([]Drop, numDrops)
	for i := range out {
		out[i] = Drop(i)
	}
	return out
}

// Stats are a Handler's counters.
type Stats struct {
	Decapsulated atomic.Uint64 // inner packets handed to the kernel
	Encapsulated atomic.Uint64 // packets sent back to the load balancer
	drops        [numDrops]atomic.Uint64
}

// Dropped is the count of packets dropped for d.
func (s *Stats) Dropped(d Drop) uint64 {
	if d >= numDrops {
		return 0
	}
	return s.drops[d].Load()
}

func (s *Stats) drop(d Drop) { s.drops[d].Add(1) }

// Handler terminates GENEVE for egressd: see the package documentation.
type Handler struct {
	cfg       Config
	cache     *Cache
	stats     Stats
	endpoints map[uint64]bool
	conns     []*net.UDPConn
	tuns      []*os.File
	raw       int
	ipID      atomic.Uint32
	running   atomic.Int32 // goroutines reading, of 2 × Readers
	closeOnce sync.Once
}

// New opens the sockets and the tun device's queues and brings the device
// up; Run then moves packets until its context ends.
func New(cfg Config) (*Handler, error) {
	cfg.setDefaults()
	h := &Handler{cfg: cfg, raw: -1, cache: NewCache(cfg.Flows, cfg.TCPIdle, cfg.Idle)}
	if len(cfg.Endpoints) > 0 {
		h.endpoints = map[uint64]bool{}
		for _, e := range cfg.Endpoints {
			h.endpoints[e] = true
		}
	}
	var err error
	if h.raw, err = rawSocket(); err != nil {
		return nil, err
	}
	for range cfg.Readers {
		f, err := openTun(cfg.Interface)
		if err != nil {
			h.close()
			return nil, err
		}
		h.tuns = append(h.tuns, f)
	}
	if err := linkUp(cfg.Interface, cfg.MTU); err != nil {
		h.close()
		return nil, err
	}
	for range cfg.Readers {
		c, err := listenUDP(cfg.Listen, 4<<20)
		if err != nil {
			h.close()
			return nil, err
		}
		h.conns = append(h.conns, c)
	}
	return h, nil
}

func (h *Handler) close() {
	h.closeOnce.Do(func() {
		for _, c := range h.conns {
			c.Close()
		}
		for _, f := range h.tuns {
			f.Close()
		}
		if h.raw >= 0 {
			unix.Close(h.raw)
		}
	})
}

// Stats are the handler's counters.
func (h *Handler) Stats() *Stats { return &h.stats }

// Flows is the number of return paths held.
func (h *Handler) Flows() int { return h.cache.Len() }

// Ready reports whether every reader of the GENEVE path is running.
func (h *Handler) Ready() bool { return int(h.running.Load()) == 2*len(h.conns) && len(h.conns) > 0 }

// Interface is the tun device's name.
func (h *Handler) Interface() string { return h.cfg.Interface }

// Run moves packets until ctx ends, then closes everything. An error of a
// reader stops them all and is returned.
func (h *Handler) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for i := range h.conns {
		wg.Add(2)
		go func() { defer wg.Done(); h.fail(cancel, h.fromLB(ctx, h.conns[i], h.tuns[i])) }()
		go func() { defer wg.Done(); h.fail(cancel, h.toLB(ctx, h.tuns[i])) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); h.expire(ctx) }()
	<-ctx.Done()
	h.close() // unblocks the readers
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func (h *Handler) fail(cancel context.CancelCauseFunc, err error) {
	if err != nil {
		cancel(err)
	}
}

func (h *Handler) expire(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.cache.Expire(now.UnixNano())
		}
	}
}

// fromLB reads GENEVE datagrams, learns each flow's return path and hands
// the inner packet to the kernel through the tun queue.
func (h *Handler) fromLB(ctx context.Context, c *net.UDPConn, tun *os.File) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	b := newBatch(32, MaxHeader+MaxInner+1)
	h.running.Add(1)
	defer h.running.Add(-1)
	var path Path
	for {
		if err := rc.Read(b.read); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("GENEVE receive: %w", err)
		}
		if b.errno != nil {
			if ctx.Err() != nil {
				return nil
			}
			h.cfg.Logger.Warn("GENEVE receive", "err", b.errno)
			continue
		}
		now := time.Now().UnixNano()
		for i := range b.n {
			payload, from, fromPort, to, ok := b.message(i)
			if !ok {
				h.stats.drop(DropOversize) // truncated: larger than any packet the load balancer sends
				continue
			}
			h.decap(payload, from, fromPort, to, now, tun, &path)
		}
	}
}

func (h *Handler) decap(payload []byte, from [4]byte, fromPort uint16, to [4]byte, now int64, tun *os.File, path *Path) {
	hdr, err := Parse(payload)
	if err == nil {
		err = CheckInner(hdr, payload[hdr.Len:])
	}
	if err != nil {
		h.stats.drop(dropFor(err))
		return
	}
	if h.endpoints != nil && !h.endpoints[hdr.Endpoint] {
		h.stats.drop(DropUnknownEndpoint)
		return
	}
	if hdr.Proto == ProtoIPv6 {
		// egressd's rules filter IPv4 only (ip6tables FORWARD drops all);
		// an IPv6 packet must not even reach the kernel's forwarding.
		h.stats.drop(DropIPv6)
		return
	}
	inner := payload[hdr.Len:]
	k, ok := KeyOf(inner)
	if !ok {
		h.stats.drop(DropMalformed)
		return
	}
	path.LB, path.Local, path.LBPort, path.LocalPort = from, to, fromPort, h.cfg.Listen.Port()
	path.Endpoint = hdr.Endpoint
	path.HeaderLen = uint8(copy(path.Header[:], payload[:hdr.Len]))
	if !h.cache.Learn(k, path, now) {
		// Without a return path the flow cannot work; the kernel must
		// not see its first packet either (it would decide it for nothing).
		h.stats.drop(DropCacheFull)
		return
	}
	if _, err := tun.Write(inner); err != nil {
		h.stats.drop(DropTun)
		return
	}
	h.stats.Decapsulated.Add(1)
}

// dropFor is the Drop of an error of Parse or CheckInner.
func dropFor(err error) Drop {
	for _, m := range []struct {
		err  error
		drop Drop
	}{{ErrMissing, DropNoOptions}, {ErrCritical, DropCritical}, {ErrProtocol, DropProtocol}, {ErrOversize, DropOversize}} {
		if errors.Is(err, m.err) {
			return m.drop
		}
	}
	return DropMalformed
}

// toLB reads what the kernel routes to the device and sends it back to the
// load balancer under its flow's latest header.
func (h *Handler) toLB(ctx context.Context, tun *os.File) error {
	buf := make([]byte, Headroom+MaxInner+1)
	var path Path
	var sa unix.SockaddrInet4
	h.running.Add(1)
	defer h.running.Add(-1)
	for {
		n, err := tun.Read(buf[Headroom:])
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("tun %s read: %w", h.cfg.Interface, err)
		}
		inner := buf[Headroom : Headroom+n]
		if n > MaxInner {
			// The load balancer would drop it without an ICMP error;
			// so does egressd, and counts it.
			h.stats.drop(DropOversize)
			continue
		}
		if n == 0 || inner[0]>>4 != 4 {
			h.stats.drop(DropIPv6) // nothing but IPv4 is ever routed back
			continue
		}
		k, ok := KeyOf(inner)
		if !ok {
			h.stats.drop(DropMalformed)
			continue
		}
		if !h.cache.Lookup(k, &path) {
			h.stats.drop(DropNoFlow)
			continue
		}
		pkt := Encap(buf, n, path.Bytes(), path.Reply(uint16(h.ipID.Add(1))))
		sa.Addr = path.LB
		if err := unix.Sendto(h.raw, pkt, 0, &sa); err != nil {
			h.stats.drop(DropSend)
			continue
		}
		h.stats.Encapsulated.Add(1)
	}
}
