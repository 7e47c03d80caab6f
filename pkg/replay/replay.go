package replay

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/egressd/egressd/pkg/decide"
	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
)

// Options configure a replay. The zero value replays as the daemon's
// defaults would decide, with DNS checks skipped.
type Options struct {
	// Engine is the daemon's engine configuration (mode, inspect_ports,
	// hello limits, limits). Its Verifier, Log, Now and Logger are
	// replay's own: what is set there is ignored.
	Engine engine.Config
	// Resolve are the DNS answers names are checked against. nil: the
	// check is skipped; names are taken as if verified and each such
	// line says "dns_check":"skipped".
	Resolve Answers
	// VerifyChecksums drops packets with a bad IPv4, TCP or UDP checksum,
	// as conntrack would. Off by default: a capture taken on a host
	// records the checksums the NIC had yet to fill in.
	VerifyChecksums bool
	// MaxConns bounds replay's connection table. 0: 262144.
	MaxConns int
	// Progress, if set, is called every few thousand packets or lines.
	Progress func(Progress)
}

// Progress is how far a replay has got.
type Progress struct {
	Bytes   int64  // input bytes read (as stored: compressed if gzipped)
	Packets uint64 // frames or log lines read
	Flows   int    // lines written or flows compared
}

// Counts say what became of the input's packets.
type Counts struct {
	Packets          uint64 // frames read
	Bytes            int64  // input bytes read
	NotIPv4          uint64 // frames without IPv4 (ARP, IPv6, other link layers)
	NotTCPUDP        uint64 // IPv4 packets of other protocols (ICMP, ...)
	Malformed        uint64 // IPv4 or transport headers that do not parse
	BadChecksum      uint64 // dropped by --verify-checksums
	Invalid          uint64 // TCP flag combinations conntrack calls INVALID
	Stray            uint64 // TCP resets outside any connection
	Fragments        uint64 // IPv4 fragments seen
	Reassembled      uint64 // datagrams reassembled from them
	FragmentsDropped uint64 // fragments refused, or datagrams in progress given up
	Truncated        uint64 // packets the capture cut short (snap length)
	Evicted          uint64 // connections forgotten at the table's bound
	BadTimestamps    uint64 // packets stamped before 1970 or after 2200 (taken as the previous packet's time)
	TruncatedEnd     bool   // the input ends inside a packet (a capture stopped hard)
}

// Summary is what a replay found.
type Summary struct {
	Format Format
	Counts

	// With one policy: decision lines written, by verdict, and denies by
	// reason. With a baseline: the new policy's, over the flows compared.
	Flows, Allowed, Denied int
	DeniedBy               map[string]int

	Midstream    int // flows whose start is not in the capture
	CaptureEnded int // flows still undecided when the capture ends
	Reused       int // connections given an earlier one's verdict on the same 5-tuple
	Cut          int // flows that lost packets to the capture's snap length

	// DNSSkipped counts decisions whose DNS check was skipped (no
	// --resolve); Unresolved the names --resolve lacked, with the flows
	// that needed them.
	DNSSkipped int
	Unresolved map[string]int

	LogLines, LogSkipped int // decision log input: lines read, lines that are not decisions

	Changes *Changes // with a baseline
}

// Changes are the verdicts a new policy changes against a baseline.
type Changes struct {
	Compared, Unchanged       int
	NewlyDenied, NewlyAllowed int
	DeniedBy                  map[string]int // newly denied, by the new policy's rule (or "(reason)")
	AllowedBy                 map[string]int // newly allowed, by the baseline's rule that denied them
	NotCompared               int            // undecided by one of the two (midstream, capture ended)
}

// Run replays in, a capture or a decision log, against pol and writes one
// decision line per flow to out. With a baseline it decides every flow
// with both and writes only the flows whose verdict changes. The Summary
// is returned also with an error, for what was replayed before it.
func Run(in io.Reader, out io.Writer, pol, baseline *policy.Policy, opts Options) (*Summary, error) {
	if pol == nil {
		return nil, errors.New("replay: no policy")
	}
	cr := &countingReader{r: in}
	sum := &Summary{DeniedBy: map[string]int{}, Unresolved: map[string]int{}}
	defer func() { sum.Bytes = cr.n }()
	format, br, err := detect(bufio.NewReaderSize(cr, 1<<16))
	if err != nil {
		return sum, err
	}
	sum.Format = format
	pols := []*policy.Policy{pol}
	if baseline != nil {
		pols = append(pols, baseline)
		sum.Changes = &Changes{DeniedBy: map[string]int{}, AllowedBy: map[string]int{}}
	}
	o := newOutput(out, sum, baseline != nil)
	progress := func(packets uint64) {
		if opts.Progress != nil {
			opts.Progress(Progress{Bytes: cr.n, Packets: packets, Flows: sum.Flows})
		}
	}
	if format == FormatLog {
		err = replayLog(br, o, pols, &opts, progress)
	} else {
		err = replayCapture(format, br, o, pols, &opts, progress)
	}
	if cerr := o.close(); err == nil {
		err = cerr
	}
	return sum, err
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// player runs a capture through one engine per policy.
type player struct {
	opts    *Options
	pols    []*policy.Policy
	out     *output
	sum     *Summary
	engines []*engine.Engine
	shards  []*engine.Shard
	sinks   []*sink
	track   *tracker
	ip      *ipLayer
	dec     *engine.Decoder
	pkt     engine.Packet
	id      uint32

	clock, lastTick time.Time
	tick            time.Duration
	horizon         time.Duration   // hello.timeout and a tick: the longest a flow waits
	verifier        *staticVerifier // nil: DNS checks skipped
	inspect         policy.Options
}

func replayCapture(format Format, br *bufio.Reader, o *output, pols []*policy.Policy, opts *Options, progress func(uint64)) error {
	var rd frameReader
	var err error
	if format == FormatPcap {
		rd, err = newPcapReader(br)
	} else {
		rd, err = newNgReader(br)
	}
	if err != nil {
		return err
	}
	pl, err := newPlayer(o, pols, opts)
	if err != nil {
		return err
	}
	defer pl.close()
	for {
		f, err := rd.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			pl.sum.TruncatedEnd = true
			break
		}
		if err != nil {
			pl.finish()
			return fmt.Errorf("packet %d: %w", pl.sum.Packets+1, err)
		}
		pl.sum.Packets++
		pl.frame(f)
		if pl.sum.Packets%4096 == 0 {
			progress(pl.sum.Packets)
		}
	}
	pl.finish()
	progress(pl.sum.Packets)
	return nil
}

// maxConns is the connection table's default bound, conntrack's usual
// nf_conntrack_max.
const maxConns = 262144

func newPlayer(o *output, pols []*policy.Policy, opts *Options) (*player, error) {
	pl := &player{opts: opts, pols: pols, out: o, sum: o.sum, dec: engine.NewDecoder()}
	pl.ip = newIPLayer(opts.VerifyChecksums, &pl.sum.Counts)
	pl.inspect = policy.Options{InspectTCP: opts.Engine.InspectTCP, InspectUDP: opts.Engine.InspectUDP}
	if opts.Resolve != nil {
		pl.verifier = &staticVerifier{answers: opts.Resolve, unresolved: pl.sum.Unresolved}
	}
	max := opts.MaxConns
	if max <= 0 {
		max = maxConns
	}
	pl.track = newTracker(max, len(pols), pl.inspect.Inspected, &pl.sum.Counts)
	for i, p := range pols {
		cfg := opts.Engine
		cfg.Verifier, cfg.Unchecked = nil, decide.Skipped
		if pl.verifier != nil {
			cfg.Verifier = pl.verifier
		}
		cfg.Log = func(r *declog.Record) { pl.decision(i, r) }
		cfg.Now = func() time.Time { return pl.clock }
		cfg.Logger = slog.New(slog.DiscardHandler)
		e, err := engine.New(cfg, p, 1)
		if err != nil {
			pl.close()
			return nil, err
		}
		sk := &sink{}
		e.Shard(0).Attach(sk)
		pl.sinks = append(pl.sinks, sk)
		pl.engines = append(pl.engines, e)
		pl.shards = append(pl.shards, e.Shard(0))
	}
	pl.tick = pl.engines[0].TickInterval()
	pl.horizon = pl.engines[0].Config().HelloTimeout + pl.tick
	pl.out.enforced = pl.engines[0].Config().Mode == engine.Enforce
	return pl, nil
}

func (pl *player) close() {
	for _, e := range pl.engines {
		e.Close()
	}
}

// sink takes the engine's per-packet verdicts. Replay follows decisions
// through the log, and the tracker plays the connection mark; the sink
// only tells whether the packet just handled got a verdict.
type sink struct{ verdict bool }

func (*sink) Pass(uint32)                      {}
func (s *sink) Verdict(uint32, policy.Verdict) { s.verdict = true }
func (*sink) Drop(uint32)                      {}

// Conclude is a verdict without a packet: the decision line tells the
// tracker.
func (*sink) Conclude(engine.Tuple, policy.Verdict) error { return nil }

// frame runs one captured frame through the NAT's path.
func (pl *player) frame(f frame) {
	pl.advance(f.ts)
	ip, ok := ipv4Of(f.link, f.data)
	if !ok {
		pl.sum.NotIPv4++
		return
	}
	dg, truncated := pl.ip.packet(ip, pl.clock)
	if dg == nil {
		return
	}
	p := &pl.pkt
	var hasPayload bool
	if truncated {
		pl.sum.Truncated++
		if !peekHeaders(dg, p, &hasPayload, &pl.sum.Counts) {
			return
		}
	} else {
		if err := pl.dec.Decode(dg, p); err != nil {
			if errors.Is(err, engine.ErrNotTransport) {
				pl.sum.NotTCPUDP++
			} else {
				pl.sum.Malformed++
			}
			return
		}
		hasPayload = len(p.Payload) > 0
	}
	p.Time = pl.clock
	obs := pl.track.observe(p, hasPayload, pl.clock)
	c := obs.c
	switch {
	case obs.midstream:
		pl.sum.Midstream++
		pl.out.undecided(c, "midstream")
		return
	case c == nil || !obs.queue || c.pending == 0:
		return
	case truncated && hasPayload:
		// The engine would read bytes the capture does not have.
		if !c.cut {
			c.cut = true
			pl.sum.Cut++
		}
		return
	}
	pl.id++
	p.ID = pl.id
	for i, s := range pl.shards {
		if c.pending&(1<<i) == 0 {
			continue
		}
		pl.sinks[i].verdict = false
		s.Handle(p)
		pl.engines[i].WaitVerifications()
		if pl.sinks[i].verdict && c.pending&(1<<i) != 0 {
			pl.reused(c, i)
		}
	}
}

// reused handles a packet the engine gave a verdict without deciding its
// flow: the engine still holds (for its linger) the decision of an
// earlier connection on the same 5-tuple, and gives it to this one
// without a decision line. The daemon does the same (conntrack starts a
// new connection, the engine does not): replay says so on a line of its
// own.
func (pl *player) reused(c *conn, i int) {
	first := !c.reused
	c.reused = true
	all := pl.track.decided(c, i)
	switch {
	case len(pl.pols) == 1:
		pl.sum.Reused++
		pl.out.undecided(c, "reused")
	case all:
		if first {
			pl.sum.Reused++
		}
		pl.sum.Changes.NotCompared++
	}
}

// advance moves the engines' clock to a packet's time, ticking them on
// the way as the daemon's Run would (every TickInterval), so that a flow
// whose hello never completes is denied when its hello.timeout ends.
func (pl *player) advance(ts time.Time) {
	if ts.Before(minTime) || ts.After(maxTime) {
		// A forged or broken timestamp: keep the clock where it was.
		pl.sum.BadTimestamps++
		ts = pl.clock
		if ts.IsZero() {
			ts = minTime
		}
	}
	if ts.Before(pl.clock) {
		ts = pl.clock // time never runs backwards (interleaved interfaces)
	}
	if pl.clock.IsZero() {
		pl.clock, pl.lastTick = ts, ts
		return
	}
	// Step only while something waits for a deadline, and no further than
	// the latest one can be (hello.timeout past the last step): each step
	// costs next to nothing, and a gap of days in the capture costs no
	// more than a gap of seconds.
	limit := pl.lastTick.Add(pl.horizon)
	for pl.track.undecided > 0 {
		next := pl.lastTick.Add(pl.tick)
		if next.After(ts) || next.After(limit) {
			break
		}
		pl.clock, pl.lastTick = next, next
		for _, e := range pl.engines {
			e.Tick(next)
		}
	}
	pl.clock = ts
	if ts.Sub(pl.lastTick) >= pl.tick {
		pl.lastTick = ts
		for _, e := range pl.engines {
			e.Tick(ts) // forget lingering flows
		}
	}
}

// Timestamps replay believes: from the epoch to well past any capture.
// Time arithmetic near time.Time's limits wraps around.
var (
	minTime = time.Unix(0, 0)
	maxTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// decision receives engine i's decision line.
func (pl *player) decision(i int, r *declog.Record) {
	k := connKey{client: r.Src.As4(), server: r.Dst.As4(), cport: r.SrcPort, sport: r.DstPort, proto: r.Proto}
	c := pl.track.conns[k]
	pl.markDNS(pl.pols[i], r)
	note := ""
	if c != nil && c.cut {
		note = "truncated"
	}
	if c == nil {
		// Not a connection replay fed (it cannot happen): write it.
		pl.out.decision(r, note)
		return
	}
	all := pl.track.decided(c, i)
	if len(pl.pols) == 1 {
		pl.out.decision(r, note)
		return
	}
	if c.recs == nil {
		c.recs = new([2]declog.Record)
	}
	c.recs[i] = *r
	switch {
	case all && c.reused:
		pl.sum.Changes.NotCompared++ // the other engine gave it an earlier flow's verdict
	case all:
		pl.out.compare(&c.recs[0], &c.recs[1], note)
	}
}

// markDNS says on a line when a DNS check it depends on was skipped: on
// a port without a name, rules whose names match by DNS answers replay
// does not have. (A name an allow rests on is skipped by the engine
// itself: Unchecked.)
func (pl *player) markDNS(p *policy.Policy, r *declog.Record) {
	if pl.verifier != nil {
		return
	}
	if r.DNSCheck == declog.CheckNone && !r.Undecided && r.Reason != policy.ReasonLimit &&
		!pl.inspect.Inspected(r.Proto, r.DstPort) && dnsMatters(p, r) {
		r.DNSCheck = declog.CheckSkipped
	}
}

// dnsMatters reports whether a flow's decision on a port without a name
// could depend on DNS answers replay does not have. Matching names only
// adds rules to the decision, so if every literal name matching gives the
// decision that none matching gives, no set of answers changes it.
func dnsMatters(p *policy.Policy, r *declog.Record) bool {
	names := p.LiteralNames()
	if len(names) == 0 {
		return false
	}
	q := policy.Query{Src: r.Src, Dst: r.Dst, Port: r.DstPort, Proto: r.Proto}
	none := p.Decide(q)
	q.DNSNames = names
	all := p.Decide(q)
	return none.Verdict != all.Verdict || none.Rule != all.Rule
}

// finish reports the flows still undecided when the capture ends, in the
// order they started.
func (pl *player) finish() {
	var left []*conn
	for _, c := range pl.track.conns {
		if c.pending != 0 {
			left = append(left, c)
		}
	}
	slices.SortFunc(left, func(a, b *conn) int { return a.first.Compare(b.first) })
	for _, c := range left {
		note := "capture-ended"
		if c.cut {
			note = "truncated"
		} else {
			pl.sum.CaptureEnded++
		}
		pl.out.undecided(c, note)
	}
}

// peekHeaders fills p from a packet the capture cut short: addresses,
// ports and TCP flags when they are there. hasPayload comes from the IP
// and TCP lengths. It reports false when not even that much was captured.
func peekHeaders(dg []byte, p *engine.Packet, hasPayload *bool, c *Counts) bool {
	ihl := int(dg[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(dg[2:4]))
	*p = engine.Packet{Src: netip.AddrFrom4([4]byte(dg[12:16])), Dst: netip.AddrFrom4([4]byte(dg[16:20]))}
	seg := dg[ihl:]
	switch dg[9] {
	case protoTCP:
		if len(seg) < 14 {
			c.Malformed++
			return false
		}
		p.Proto = policy.TCP
		p.Seq = binary.BigEndian.Uint32(seg[4:8])
		fl := seg[13]
		p.FIN, p.SYN, p.RST, p.ACK = fl&0x01 != 0, fl&0x02 != 0, fl&0x04 != 0, fl&0x10 != 0
		*hasPayload = total > ihl+int(seg[12]>>4)*4
	case protoUDP:
		if len(seg) < 4 {
			c.Malformed++
			return false
		}
		p.Proto = policy.UDP
		*hasPayload = total > ihl+8
	default:
		c.NotTCPUDP++
		return false
	}
	p.SrcPort, p.DstPort = binary.BigEndian.Uint16(seg[0:2]), binary.BigEndian.Uint16(seg[2:4])
	return true
}
