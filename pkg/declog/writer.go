package declog

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
)

// Writer writes decision lines to an io.Writer from a goroutine of its own,
// so that the verdict path never waits on a slow disk or journal. Lines
// wait in a bounded buffer; when it is full a line is dropped and counted,
// never queued without bound.
type Writer struct {
	out     io.Writer
	ch      chan *[]byte
	pool    sync.Pool
	dropped atomic.Uint64
	written atomic.Uint64
	errors  atomic.Uint64
	done    chan struct{}
}

// NewWriter returns a Writer with room for depth lines in flight.
func NewWriter(out io.Writer, depth int) *Writer {
	w := &Writer{out: out, ch: make(chan *[]byte, depth), done: make(chan struct{})}
	w.pool.New = func() any { b := make([]byte, 0, 512); return &b }
	return w
}

// Log queues one record. It never blocks; it is safe for concurrent use.
func (w *Writer) Log(r *Record) {
	bp := w.pool.Get().(*[]byte)
	*bp = r.AppendJSON((*bp)[:0])
	select {
	case w.ch <- bp:
	default:
		w.dropped.Add(1)
		w.pool.Put(bp)
	}
}

// Run writes queued lines until ctx is done, then writes what is left and
// returns. The daemon runs it once.
func (w *Writer) Run(ctx context.Context) {
	defer close(w.done)
	for {
		select {
		case bp := <-w.ch:
			w.write(bp)
		case <-ctx.Done():
			for {
				select {
				case bp := <-w.ch:
					w.write(bp)
				default:
					return
				}
			}
		}
	}
}

// Wait returns when Run has returned.
func (w *Writer) Wait() { <-w.done }

func (w *Writer) write(bp *[]byte) {
	if _, err := w.out.Write(*bp); err != nil {
		w.errors.Add(1)
	} else {
		w.written.Add(1)
	}
	w.pool.Put(bp)
}

// Dropped returns how many lines were dropped because the buffer was full.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Written returns how many lines were written.
func (w *Writer) Written() uint64 { return w.written.Load() }

// WriteErrors returns how many lines the output refused.
func (w *Writer) WriteErrors() uint64 { return w.errors.Load() }
