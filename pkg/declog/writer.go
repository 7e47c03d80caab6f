package declog

import (
	"context"
	"io"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// WriterConfig configures a Writer. The zero value of each field is the
// documented default.
type WriterConfig struct {
	// Outputs receive every line (stdout, a RotatingFile). Required.
	Outputs []io.Writer
	// Depth is how many lines may wait for the writer goroutine; past it a
	// line is dropped and counted. 0: 65536.
	Depth int
	// FoldRate is how many denied flows per second one source may log
	// line by line (with FoldBurst at once); past it its denied flows are
	// counted, not logged, and a summary line says how many were folded.
	// 0: no folding.
	FoldRate  float64
	FoldBurst int // 0: 10 × FoldRate
	// FoldWindow is how often summary lines are written. 0: 10s.
	FoldWindow time.Duration
	// MaxSources bounds the per-source fold state; sources past it share
	// one bucket (src "*" in summaries). 0: 65536.
	MaxSources int
	// FlushDelay, when set, is how long the writer gathers lines after
	// the first of a batch before it writes them: lines that come
	// meanwhile wait in the buffer without waking anyone, so the verdict
	// path pays for waking the writer (and whoever reads the output) once
	// per batch, not once per line. 0: each line is written as soon as
	// the writer sees it.
	FlushDelay time.Duration
	Now        func() time.Time // nil: time.Now
	// EMF, if set, adds metrics in CloudWatch Embedded Metric Format to
	// the lines (EMFConfig).
	EMF *EMFConfig
}

// Writer writes decision lines. The line of a flow whose bytes will cross
// (allowed, or not enforced: monitor mode) is written before Log returns,
// and the engine logs before it gives the kernel the verdict, so no
// allowed flow is ever without its line, even when egressd is killed (a
// line in a buffer of ours dies with us; one written is the kernel's).
// Every other line (denied flows, the bulk of a flood) is written from a
// goroutine of its own, so that a flood of denials never waits on a slow
// disk or journal: those lines wait in a bounded buffer; when it is full
// a line is dropped and counted, never queued without bound. A source that floods denied flows is summarised
// (folded) past a per-source rate. Every line is counted once: as written,
// dropped (buffer full), folded, or failed (an output refused it).
type Writer struct {
	cfg  WriterConfig
	ch   chan *[]byte
	pool sync.Pool
	done chan struct{}

	// Lines are gathered while more are waiting and written to the
	// outputs in one write each when the queue runs dry: under load a
	// write per line costs more than the decision it records.
	batch    []byte
	batched  uint64
	maxBatch int

	out sync.Mutex // one write to the outputs at a time

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
	overall bucket // for sources past MaxSources
	emf     *emf   // nil: no EMF lines

	written, dropped, folded, failed atomic.Uint64
}

type bucket struct {
	tokens float64
	last   time.Time
	folded uint64 // since the last summary
	since  time.Time
}

// NewWriter returns a Writer; Run must be running for lines to be written.
func NewWriter(cfg WriterConfig) *Writer {
	if cfg.Depth == 0 {
		cfg.Depth = 65536
	}
	if cfg.FoldBurst == 0 {
		cfg.FoldBurst = int(10 * cfg.FoldRate)
	}
	if cfg.FoldWindow == 0 {
		cfg.FoldWindow = 10 * time.Second
	}
	if cfg.MaxSources == 0 {
		cfg.MaxSources = 65536
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Writer{cfg: cfg, ch: make(chan *[]byte, cfg.Depth), done: make(chan struct{}), buckets: map[netip.Addr]*bucket{}, maxBatch: 64 << 10}
	w.pool.New = func() any { b := make([]byte, 0, 512); return &b }
	if cfg.EMF != nil {
		w.emf = newEMF(*cfg.EMF)
	}
	return w
}

// Log writes one record, or queues it: a crossing one (Record.Crosses) is
// written before Log returns, any other never waits. Safe for concurrent
// use.
func (w *Writer) Log(r *Record) {
	if w.emf != nil {
		w.emf.count(r) // folded lines count too
	}
	if w.cfg.FoldRate > 0 && !r.Undecided && !r.Crosses() && w.fold(r.Src, r.Time) {
		return
	}
	bp := w.pool.Get().(*[]byte)
	*bp = r.AppendJSON((*bp)[:0])
	if r.Crosses() {
		if w.writeBytes(*bp) {
			w.written.Add(1)
		}
		w.pool.Put(bp)
		return
	}
	select {
	case w.ch <- bp:
	default:
		w.dropped.Add(1)
		w.pool.Put(bp)
	}
}

// fold takes a token from src's bucket; without one the line is folded.
func (w *Writer) fold(src netip.Addr, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.buckets[src]
	if b == nil {
		if len(w.buckets) >= w.cfg.MaxSources {
			b = &w.overall
		} else {
			b = &bucket{tokens: float64(w.cfg.FoldBurst), last: now}
			w.buckets[src] = b
		}
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(float64(w.cfg.FoldBurst), b.tokens+el*w.cfg.FoldRate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return false
	}
	if b.folded == 0 {
		b.since = now
	}
	b.folded++
	w.folded.Add(1)
	return true
}

// Run writes queued lines, and the fold summaries every FoldWindow, until
// ctx is done; then it writes what is queued and the last summaries, and
// returns. The daemon runs it once.
func (w *Writer) Run(ctx context.Context) {
	defer close(w.done)
	t := time.NewTicker(w.cfg.FoldWindow)
	defer t.Stop()
	var gather *time.Timer
	var emfTick <-chan time.Time
	if w.emf != nil {
		et := time.NewTicker(w.emf.cfg.Interval)
		defer et.Stop()
		emfTick = et.C
	}
	for {
		select {
		case <-emfTick:
			w.flush()
			w.writeBytes(w.emf.lines(w.cfg.Now()))
		case bp := <-w.ch:
			w.add(bp)
			switch {
			case len(w.batch) >= w.maxBatch:
				w.flush()
			case w.cfg.FlushDelay > 0:
				// The first line of a batch: take the rest without being
				// woken for each.
				if gather == nil {
					gather = time.NewTimer(w.cfg.FlushDelay)
					defer gather.Stop()
				} else {
					gather.Reset(w.cfg.FlushDelay)
				}
				w.gather(ctx, gather.C)
				w.flush()
			case len(w.ch) == 0:
				w.flush()
			}
		case <-t.C:
			w.flush()
			w.summarise()
		case <-ctx.Done():
			for {
				select {
				case bp := <-w.ch:
					w.add(bp)
				default:
					w.flush()
					w.summarise()
					return
				}
			}
		}
	}
}

// gather takes the lines that come until timer fires (or ctx ends),
// flushing whenever the batch is full.
func (w *Writer) gather(ctx context.Context, timer <-chan time.Time) {
	select {
	case <-timer:
	case <-ctx.Done():
	}
	for {
		select {
		case bp := <-w.ch:
			w.add(bp)
			if len(w.batch) >= w.maxBatch {
				w.flush()
			}
		default:
			return
		}
	}
}

// summarise writes one line per source whose denied flows were folded
// since the last summary, and forgets quiet sources.
func (w *Writer) summarise() {
	now := w.cfg.Now()
	type summary struct {
		src    string
		folded uint64
		since  time.Time
	}
	var out []summary
	w.mu.Lock()
	for src, b := range w.buckets {
		if b.folded > 0 {
			out = append(out, summary{src.String(), b.folded, b.since})
			b.folded = 0
		} else if now.Sub(b.last) > w.cfg.FoldWindow && b.tokens >= float64(w.cfg.FoldBurst)-1 {
			delete(w.buckets, src) // quiet and full: nothing to remember
		}
	}
	if w.overall.folded > 0 {
		out = append(out, summary{"*", w.overall.folded, w.overall.since})
		w.overall.folded = 0
	}
	w.mu.Unlock()

	for _, s := range out {
		line := make([]byte, 0, 160)
		line = append(line, `{"time":"`...)
		line = now.UTC().AppendFormat(line, "2006-01-02T15:04:05.000Z07:00")
		line = append(line, `","src":`...)
		line = AppendString(line, s.src)
		line = append(line, `,"verdict":"deny","folded":`...)
		line = strconv.AppendUint(line, s.folded, 10)
		line = append(line, `,"since":"`...)
		line = s.since.UTC().AppendFormat(line, "2006-01-02T15:04:05.000Z07:00")
		line = append(line, "\"}\n"...)
		w.writeBytes(line)
	}
}

// Wait returns when Run has returned.
func (w *Writer) Wait() { <-w.done }

func (w *Writer) add(bp *[]byte) {
	w.batch = append(w.batch, *bp...)
	w.batched++
	w.pool.Put(bp)
}

// flush writes the gathered lines; they count as written, or as failed
// if an output refused them.
func (w *Writer) flush() {
	if w.batched == 0 {
		return
	}
	if w.writeBytes(w.batch) {
		w.written.Add(w.batched)
	} else {
		w.failed.Add(w.batched - 1) // writeBytes counted one
	}
	w.batch, w.batched = w.batch[:0], 0
}

// writeBytes writes to every output; a line counts as failed if any output
// refused it.
func (w *Writer) writeBytes(b []byte) bool {
	w.out.Lock()
	defer w.out.Unlock()
	ok := true
	for _, o := range w.cfg.Outputs {
		if _, err := o.Write(b); err != nil {
			ok = false
		}
	}
	if !ok {
		w.failed.Add(1)
	}
	return ok
}

// Counts of decision lines.
type Counts struct {
	Written uint64 // written to every output
	Dropped uint64 // dropped: the buffer was full
	Folded  uint64 // folded into a summary line
	Failed  uint64 // an output refused them
}

// Counts returns the writer's counts.
func (w *Writer) Counts() Counts {
	return Counts{Written: w.written.Load(), Dropped: w.dropped.Load(), Folded: w.folded.Load(), Failed: w.failed.Load()}
}
