package declog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/pkg/policy"
)

// gate is an output that blocks every write until opened, like a stalled
// journal or a full disk.
type gate struct {
	open chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (g *gate) Write(b []byte) (int, error) {
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.Write(b)
}

// TestLogPressure: a burst of 100,000 denied flows from a few sources while
// the output is stalled. Log never waits; every line is accounted for
// exactly once, as written, dropped or folded; the summary lines add up to
// the folded count.
func TestLogPressure(t *testing.T) {
	out := &gate{open: make(chan struct{})}
	clock := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	w := NewWriter(WriterConfig{Outputs: []any2w{out}, Depth: 100, FoldRate: 50, FoldBurst: 200, FoldWindow: time.Hour, Now: now})
	ctx, cancel := context.WithCancel(context.Background())
	go w.Run(ctx)

	const n = 100_000
	srcs := []netip.Addr{netip.MustParseAddr("10.0.1.7"), netip.MustParseAddr("10.0.1.8"), netip.MustParseAddr("10.0.1.9")}
	r := sample()
	r.Verdict, r.Reason = policy.Deny, policy.ReasonDefault
	done := make(chan struct{})
	go func() {
		for i := 0; i < n; i++ {
			r.Src = srcs[i%len(srcs)]
			r.Time = now()
			w.Log(&r)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Log blocked behind a stalled output")
	}
	close(out.open)
	cancel()
	w.Wait()

	c := w.Counts()
	if c.Written+c.Dropped+c.Folded != n || c.Failed != 0 {
		t.Fatalf("counts %+v do not add up to %d lines", c, n)
	}
	if c.Folded == 0 || c.Dropped == 0 {
		t.Fatalf("the burst should both fold and drop: %+v", c)
	}
	// Per source, at most the burst got through before folding.
	if c.Written+c.Dropped > uint64(len(srcs)*200) {
		t.Errorf("%d lines were not folded; the buckets allow %d", c.Written+c.Dropped, len(srcs)*200)
	}
	var lines, foldedSum uint64
	sc := bufio.NewScanner(&out.buf)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("invalid line %q: %v", sc.Text(), err)
		}
		if f, ok := m["folded"]; ok {
			foldedSum += uint64(f.(float64))
		} else {
			lines++
		}
	}
	if lines != c.Written || foldedSum != c.Folded {
		t.Errorf("output has %d lines and summaries folding %d; counts say %+v", lines, foldedSum, c)
	}
}

type any2w = io.Writer

func TestAllowsAreNeverFolded(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(WriterConfig{Outputs: []any2w{&buf}, FoldRate: 1, FoldBurst: 1})
	ctx, cancel := context.WithCancel(context.Background())
	go w.Run(ctx)
	r := sample()
	for i := 0; i < 100; i++ {
		w.Log(&r)
	}
	cancel()
	w.Wait()
	if c := w.Counts(); c.Written != 100 || c.Folded != 0 {
		t.Errorf("allowed flows were folded: %+v", c)
	}
}

func TestRotatingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "decisions.jsonl")
	f, err := OpenRotating(path, 4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line := []byte(strings.Repeat("x", 99) + "\n")
	for i := 0; i < 200; i++ { // 20,000 bytes: several rotations
		if _, err := f.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"decisions.jsonl", "decisions.jsonl.1", "decisions.jsonl.2"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if st.Size() > 4096 || st.Size()%100 != 0 {
			t.Errorf("%s is %d bytes; want whole lines, at most 4096", name, st.Size())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "decisions.jsonl.3")); !os.IsNotExist(err) {
		t.Errorf("more rotated files kept than asked: %v", err)
	}
}

// BenchmarkLogStalled is the cost of Log on the verdict path while the
// output is stalled and the buffer full: it must stay a few hundred ns.
func BenchmarkLogStalled(b *testing.B) {
	w := NewWriter(WriterConfig{Outputs: []any2w{&gate{open: make(chan struct{})}}, Depth: 16})
	r := sample()
	r.Verdict = policy.Deny // an allowed flow's line is written at once, never queued
	b.ReportAllocs()
	for range b.N {
		w.Log(&r)
	}
}

// BenchmarkLogFolded is Log for a source past its fold rate.
func BenchmarkLogFolded(b *testing.B) {
	w := NewWriter(WriterConfig{Outputs: []any2w{&gate{open: make(chan struct{})}}, FoldRate: 1, FoldBurst: 1})
	r := sample()
	r.Verdict = policy.Deny
	b.ReportAllocs()
	for range b.N {
		w.Log(&r)
	}
}

// TestCrossingLinesWrittenAtOnce: the line of an allowed flow, and of any
// flow in monitor mode, is in the outputs when Log returns, with no
// goroutine running and a flush delay set (so the verdict that follows it
// never outlives it); a denied flow's waits for the writer.
func TestCrossingLinesWrittenAtOnce(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(WriterConfig{Outputs: []any2w{&buf}, FlushDelay: time.Second})
	allowed, monitored, denied := sample(), sample(), sample()
	monitored.Verdict, monitored.Enforced = policy.Deny, false
	denied.Verdict = policy.Deny
	w.Log(&allowed)
	w.Log(&monitored)
	w.Log(&denied)
	want := string(allowed.AppendJSON(nil)) + string(monitored.AppendJSON(nil))
	if got := buf.String(); got != want {
		t.Errorf("written when Log returned:\n%s\nwant:\n%s", got, want)
	}
	if c := w.Counts(); c.Written != 2 {
		t.Errorf("counts %+v, want 2 written", c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w.Run(ctx) // the denied line now
	if got := buf.String(); got != want+string(denied.AppendJSON(nil)) {
		t.Errorf("after Run: %s", got)
	}
}

// TestMonitorLinesNeverFolded: in monitor mode a denied flow's bytes
// cross, so its line is written like an allowed one's, never folded.
func TestMonitorLinesNeverFolded(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(WriterConfig{Outputs: []any2w{&buf}, FoldRate: 1, FoldBurst: 1, Now: func() time.Time { return time.Unix(1, 0) }})
	r := sample()
	r.Verdict, r.Enforced = policy.Deny, false
	for range 5 {
		w.Log(&r)
	}
	if n := bytes.Count(buf.Bytes(), []byte("\n")); n != 5 {
		t.Errorf("%d of 5 monitor-mode lines written when Log returned; counts %+v", n, w.Counts())
	}
}

// TestFlushDelay: with a flush delay, lines logged within it reach the
// output in one write, after the delay; none is lost at the end.
func TestFlushDelay(t *testing.T) {
	out := &countingWriter{}
	w := NewWriter(WriterConfig{Outputs: []any2w{out}, FlushDelay: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	go w.Run(ctx)
	r := sample()
	r.Verdict = policy.Deny // denied flows' lines are the ones gathered
	for range 10 {
		w.Log(&r)
	}
	deadline := time.Now().Add(5 * time.Second)
	for w.Counts().Written < 10 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if c := w.Counts(); c.Written != 10 {
		t.Fatalf("counts %+v, want 10 written", c)
	}
	if n := out.writes.Load(); n != 1 {
		t.Errorf("%d writes for 10 lines logged within the delay, want 1", n)
	}
	w.Log(&r)
	cancel()
	w.Wait()
	if c := w.Counts(); c.Written != 11 {
		t.Errorf("counts %+v after the end, want 11 written", c)
	}
}

type countingWriter struct {
	writes atomic.Int64
}

func (c *countingWriter) Write(b []byte) (int, error) { c.writes.Add(1); return len(b), nil }
