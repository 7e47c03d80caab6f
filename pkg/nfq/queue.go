package nfq

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/pkg/policy"
)

// QueueConfig configures one NFQUEUE reader.
type QueueConfig struct {
	Num uint16 // the queue number (iptables --queue-balance covers it)
	// Len is the kernel's queue length; past it the kernel drops packets
	// (or, with FailOpen, accepts them unmarked). 0: 8192.
	Len uint32
	// FailOpen asks the kernel to accept packets when the queue is full
	// (fail_open). Without it they are dropped: the client retransmits.
	FailOpen bool
	// NetNS is a network namespace file descriptor to open the queue in;
	// 0: the caller's namespace.
	NetNS int
	// DropAll makes this the reply queue of fail_open: every packet in it
	// is a reply with payload of an undecided flow, and is dropped. The
	// queue exists so that its bypass lets replies through while egressd
	// is down.
	DropAll bool
}

// OpError is an error of a queue operation, with the queue's number.
type OpError struct {
	Op    string
	Queue uint16
	Err   error
}

func (e *OpError) Error() string { return fmt.Sprintf("queue %d: %s: %v", e.Queue, e.Op, e.Err) }
func (e *OpError) Unwrap() error { return e.Err }

// QueueStats count what happened at the socket.
type QueueStats struct {
	ENOBUFS       atomic.Uint64 // the kernel could not deliver: packets were lost from our view
	RecvErrors    atomic.Uint64 // other receive errors
	VerdictErrors atomic.Uint64 // verdicts the kernel did not take
	DecodeErrors  atomic.Uint64 // packets dropped because they did not decode
	// RepliesDropped counts reply packets of undecided flows dropped by the
	// fail_open reply queue.
	RepliesDropped atomic.Uint64
}

// Queue reads one NFQUEUE and feeds its packets to a shard. It is the
// shard's Sink.
type Queue struct {
	cfg   QueueConfig
	nf    *nfqueue.Nfqueue
	shard *Shard
	dec   *Decoder
	marks Marks
	stats QueueStats
	pkt   Packet
	bound atomic.Bool
}

// Bound reports whether the queue is bound and being read.
func (q *Queue) Bound() bool { return q.bound.Load() }

// OpenQueue opens queue cfg.Num for shard. Run reads it.
func OpenQueue(cfg QueueConfig, shard *Shard) (*Queue, error) {
	if cfg.Len == 0 {
		cfg.Len = 8192
	}
	var flags uint32
	if cfg.FailOpen {
		flags |= nfqueue.NfQaCfgFlagFailOpen
	}
	ecfg := shard.e.cfg
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:     cfg.Num,
		MaxQueueLen: cfg.Len,
		// The flow head is all that is read: copying more than a full
		// head plus maximal IP and TCP headers is wasted work. A longer
		// packet is seen truncated and its flow denied (limit).
		MaxPacketLen: uint32(ecfg.HelloMaxBytes + 120),
		Copymode:     nfqueue.NfQnlCopyPacket,
		Flags:        flags,
		AfFamily:     unix.AF_INET,
		NetNS:        cfg.NetNS,
		WriteTimeout: time.Second,
	})
	if err != nil {
		return nil, &OpError{Op: "open", Queue: cfg.Num, Err: err}
	}
	q := &Queue{cfg: cfg, nf: nf, shard: shard, dec: NewDecoder(), marks: ecfg.Marks}
	shard.Attach(q)
	return q, nil
}

// Stats returns the queue's counters.
func (q *Queue) Stats() *QueueStats { return &q.stats }

// Num returns the queue's number.
func (q *Queue) Num() uint16 { return q.cfg.Num }

// maxConsecutiveErrors bounds a run of receive errors that are neither
// ENOBUFS nor timeouts: a socket that keeps failing is broken, and the
// daemon should exit (the rules stay, so new flows fail closed) and be
// restarted rather than spin.
const maxConsecutiveErrors = 100

// Run binds the queue and handles its packets until ctx is done or the
// socket fails. It returns nil after ctx is done.
func (q *Queue) Run(ctx context.Context) error {
	log := q.shard.e.cfg.Logger
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	locked := false
	errs := 0
	hook := func(a nfqueue.Attribute) int {
		if !locked {
			// The library's reader goroutine is this queue's alone: keep
			// it on one OS thread, away from the scheduler's migrations.
			runtime.LockOSThread()
			locked = true
		}
		errs = 0
		q.handle(&a)
		return 0
	}
	errfn := func(err error) int {
		switch {
		case ctx.Err() != nil:
			return 1
		case errors.Is(err, unix.ENOBUFS):
			// The socket buffer overflowed: the kernel dropped packets
			// meant for us. Their flows retransmit; count and go on.
			q.stats.ENOBUFS.Add(1)
			log.Warn("queue socket overrun: packets lost (ENOBUFS)", "queue", q.cfg.Num, "total", q.stats.ENOBUFS.Load())
			return 0
		}
		var op *netlink.OpError
		if errors.As(err, &op) && op.Timeout() {
			return 0
		}
		q.stats.RecvErrors.Add(1)
		if errs++; errs >= maxConsecutiveErrors {
			cancel(&OpError{Op: "receive", Queue: q.cfg.Num, Err: err})
			return 1
		}
		log.Error("queue receive failed", "queue", q.cfg.Num, "err", err)
		return 0
	}
	if err := q.nf.RegisterWithErrorFunc(ctx, hook, errfn); err != nil {
		q.nf.Close()
		return &OpError{Op: "bind", Queue: q.cfg.Num, Err: err}
	}
	q.bound.Store(true)
	defer q.bound.Store(false)
	<-ctx.Done()
	q.nf.Close() // waits for the reader goroutine
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func (q *Queue) handle(a *nfqueue.Attribute) {
	if a.PacketID == nil {
		return
	}
	id := *a.PacketID
	if q.cfg.DropAll {
		q.stats.RepliesDropped.Add(1)
		q.Drop(id)
		return
	}
	if a.Payload == nil {
		q.Drop(id)
		return
	}
	p := &q.pkt
	if err := q.dec.Decode(*a.Payload, p); err != nil {
		q.stats.DecodeErrors.Add(1)
		q.Drop(id)
		return
	}
	p.ID = id
	p.Time = time.Now()
	q.shard.Handle(p)
}

// Pass accepts a packet without a mark: its flow stays undecided.
func (q *Queue) Pass(id uint32) {
	q.verdict(id, q.nf.SetVerdict(id, nfqueue.NfAccept))
}

// Verdict re-injects a packet with the verdict mark (NF_REPEAT): FORWARD
// sees it again from the top, saves the mark to the connection and acts on
// it. A repeat without a mark would loop the packet back to us.
func (q *Queue) Verdict(id uint32, v policy.Verdict) {
	m := q.marks.Deny
	if v == policy.Allow {
		m = q.marks.Allow
	}
	q.verdict(id, q.nf.SetVerdictWithOption(id, nfqueue.NfRepeat, nfqueue.WithMark(m)))
}

// Drop discards a packet.
func (q *Queue) Drop(id uint32) {
	q.verdict(id, q.nf.SetVerdict(id, nfqueue.NfDrop))
}

func (q *Queue) verdict(id uint32, err error) {
	if err != nil {
		// The kernel keeps the packet until the queue is unbound, then
		// drops it: the flow fails closed and the client retransmits.
		q.stats.VerdictErrors.Add(1)
		q.shard.e.cfg.Logger.Error("verdict not delivered", "queue", q.cfg.Num, "packet", id, "err", err)
	}
}
