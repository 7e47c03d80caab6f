package replay

import (
	"bufio"
	"io"
	"net/netip"
	"os"

	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

// output writes replay's lines: the decision log's schema, through
// declog.Record.AppendJSON like the daemon's and explain's, with at most
// one field of replay's own after the schema's:
//
//	"replay":"midstream"      the flow's start is not in the capture
//	"replay":"capture-ended"  the capture ends before the flow was decided
//	"replay":"reused"         the engine gave the flow the verdict of an
//	                          earlier connection on the same 5-tuple and
//	                          ISN, as the daemon does within its linger,
//	                          unlogged (a connection with another ISN is
//	                          decided on its own)
//	"replay":"truncated"      the capture cut packets the decision needed
//	"baseline":{...}          with --baseline: the baseline's decision
//
// A line of the first three kinds is not a decision: its verdict, rule and
// reason are empty.
type output struct {
	w        *bufio.Writer
	sum      *Summary
	enforced bool
	line     []byte

	// With a baseline, newly denied flows are written as they come and
	// newly allowed ones wait in an unlinked temporary file, so that the
	// output lists the first before the second in bounded memory.
	baseline bool
	spool    *os.File
	spoolW   *bufio.Writer
	err      error
}

func newOutput(w io.Writer, sum *Summary, baseline bool) *output {
	return &output{w: bufio.NewWriterSize(w, 1<<16), sum: sum, baseline: baseline, line: make([]byte, 0, 512)}
}

// decision writes one flow's decision (one policy).
func (o *output) decision(r *declog.Record, note string) {
	o.sum.Flows++
	o.count(r)
	o.line = r.AppendJSON(o.line[:0])
	if note != "" {
		o.line = appendField(o.line, "replay", note)
	}
	o.write(o.w, o.line)
}

func (o *output) count(r *declog.Record) {
	switch r.Verdict {
	case policy.Allow:
		o.sum.Allowed++
	case policy.Deny:
		o.sum.Denied++
		o.sum.DeniedBy[r.Reason.String()]++
	}
	if r.DNSCheck == declog.CheckSkipped {
		o.sum.DNSSkipped++
	}
}

// undecided writes a flow replay could not decide (with a baseline, it is
// counted as not compared).
func (o *output) undecided(c *conn, note string) {
	if o.baseline {
		o.sum.Changes.NotCompared++
		return
	}
	r := declog.Record{
		Time: c.first, Src: netip.AddrFrom4(c.key.client), SrcPort: c.key.cport,
		Dst: netip.AddrFrom4(c.key.server), DstPort: c.key.sport, Proto: c.key.proto,
		Undecided: true, Enforced: o.enforced,
	}
	o.line = appendField(r.AppendJSON(o.line[:0]), "replay", note)
	o.write(o.w, o.line)
}

// compare writes a flow whose verdict the new policy changes; cur is the
// new policy's decision, base the baseline's.
func (o *output) compare(cur, base *declog.Record, note string) {
	ch := o.sum.Changes
	ch.Compared++
	o.sum.Flows++
	o.count(cur)
	if cur.Verdict == base.Verdict {
		ch.Unchanged++
		return
	}
	o.line = cur.AppendJSON(o.line[:0])
	o.line = append(o.line[:len(o.line)-2], `,"baseline":{"name":`...)
	o.line = declog.AppendString(o.line, base.Name)
	o.line = appendKV(o.line, "name_from", base.NameFrom.String())
	o.line = appendKV(o.line, "verdict", base.Verdict.String())
	o.line = appendKV(o.line, "rule", base.Rule)
	o.line = appendKV(o.line, "reason", base.Reason.String())
	if note != "" {
		o.line = append(o.line, `},"replay":`...)
		o.line = declog.AppendString(o.line, note)
		o.line = append(o.line, "}\n"...)
	} else {
		o.line = append(o.line, "}}\n"...)
	}
	if cur.Verdict == policy.Deny {
		ch.NewlyDenied++
		ch.DeniedBy[ruleOf(cur)]++
		o.write(o.w, o.line)
		return
	}
	ch.NewlyAllowed++
	ch.AllowedBy[ruleOf(base)]++
	if o.spool == nil && o.err == nil {
		f, err := os.CreateTemp("", "egressd-replay-*")
		if err != nil {
			o.err = err
			return
		}
		os.Remove(f.Name()) // unlinked: gone with the process, whatever happens
		o.spool, o.spoolW = f, bufio.NewWriterSize(f, 1<<16)
	}
	if o.spoolW != nil {
		o.write(o.spoolW, o.line)
	}
}

// ruleOf names what decided a line: its rule, or its reason in
// parentheses when the engine denied before any rule.
func ruleOf(r *declog.Record) string {
	if r.Rule != "" {
		return r.Rule
	}
	return "(" + r.Reason.String() + ")"
}

func (o *output) write(w *bufio.Writer, b []byte) {
	if o.err != nil {
		return
	}
	if _, err := w.Write(b); err != nil {
		o.err = err
	}
}

// close writes what waited (newly allowed flows) and flushes.
func (o *output) close() error {
	if o.spool != nil {
		if o.err == nil {
			o.err = o.spoolW.Flush()
		}
		if o.err == nil {
			if _, err := o.spool.Seek(0, io.SeekStart); err != nil {
				o.err = err
			} else if _, err := io.Copy(o.w, o.spool); err != nil {
				o.err = err
			}
		}
		o.spool.Close()
	}
	if err := o.w.Flush(); o.err == nil {
		o.err = err
	}
	return o.err
}

// appendField adds "key":"value" at the end of a line AppendJSON wrote.
func appendField(line []byte, key, value string) []byte {
	line = appendKV(line[:len(line)-2], key, value)
	return append(line, "}\n"...)
}

func appendKV(b []byte, key, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return declog.AppendString(b, value)
}
