package engine

import "time"

// What `egressd replay` (pkg/replay) needs of the engine beyond the
// daemon's API: it drives one goroutine's worth of packets through the
// same Shard.Handle, with capture time for a clock, and must stay
// deterministic.

// TickInterval is how often the daemon's Run calls Tick: a flow past
// hello.timeout is denied at most this late. Replay ticks at the same
// interval of capture time, so its "incomplete" decisions fall where the
// daemon's would.
func (e *Engine) TickInterval() time.Duration { return e.tickInterval() }

// WaitVerifications waits until every DNS verification started so far has
// decided its flow. A verification runs in a goroutine of its own; replay
// calls this after each Handle so that decisions come in capture order.
// It must not be called while another goroutine may start verifications
// (Handle on another shard), and it does not cancel anything (Close does).
func (e *Engine) WaitVerifications() { e.verifyWG.Wait() }
