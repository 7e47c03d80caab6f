package main

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Where egressd's CPU goes: each perf sample's stack is put in the first
// category, in this order, that one of its frames matches. A stack is
// read whole, so a malloc under the netlink receive counts as receive,
// and the reader's frames count only where nothing below them matched.
var perfCategories = []struct {
	name string
	re   *regexp.Regexp
}{
	{"kernel: the packet re-injected by a verdict (rest of FORWARD, NAT, veth, the receiver's TCP)", regexp.MustCompile(`\bnfqnl_reinject\b`)},
	{"verdict send (pkg/nfq verdict, sendmsg)", regexp.MustCompile(`egressd/pkg/nfq\.\(\*Queue\)\.verdict|nfqnl_recv_verdict`)},
	{"conntrack updates (ctnetlink: verdicts without a packet)", regexp.MustCompile(`egressd/pkg/nfq\.\(\*Conntrack\)`)},
	{"SYN log (NFLOG drain)", regexp.MustCompile(`egressd/pkg/nfq\.\(\*SYNLog\)`)},
	{"classify (flow head, ClientHello)", regexp.MustCompile(`egressd/pkg/classify\.`)},
	{"policy and the decision", regexp.MustCompile(`egressd/pkg/(policy|decide)\.`)},
	{"DNS verification (resolve)", regexp.MustCompile(`egressd/pkg/resolve\.`)},
	{"decision log (declog, its write)", regexp.MustCompile(`egressd/pkg/declog\.`)},
	{"engine (decoder, flow table, held packets, timers)", regexp.MustCompile(`egressd/pkg/engine\.`)},
	{"queue receive (read, netlink parsing: what is left of the reader once the engine is taken out)", regexp.MustCompile(`egressd/pkg/nfq\.\(\*Queue\)\.(Run|messages|packet)`)},
	{"garbage collector", regexp.MustCompile(`runtime\.(gcBgMarkWorker|gcDrain|gcAssist|bgsweep|bgscavenge|markroot)`)},
	{"Go scheduler: idle, sleeps and wake-ups (futex, netpoll, thread hand-offs)", regexp.MustCompile(`runtime\.(schedule|mcall|park_m|findRunnable|stopm|startm|notesleep|futex|netpoll|sysmon|mstart|goexit|exitsyscall|entersyscall|handoffp|stoplockedm|startlockedm|wakep|gopark|goready)`)},
}

// Overlays: shares of samples whose stack has a frame, across categories.
var perfOverlays = []struct {
	name string
	re   *regexp.Regexp
}{
	{"memory allocation (mallocgc) anywhere", regexp.MustCompile(`runtime\.mallocgc`)},
	{"futex wait or wake anywhere (thread sleeps and hand-offs)", regexp.MustCompile(`runtime\.futex\b|runtime\.futex\.abi0`)},
	{"goroutine creation anywhere", regexp.MustCompile(`runtime\.newproc`)},
	{"kernel softirq anywhere (network processing in egressd's time)", regexp.MustCompile(`handle_softirqs|__do_softirq`)},
}

const otherCategory = "other"

// perfBreakdown is the share of samples per category.
type perfBreakdown struct {
	samples  int
	period   time.Duration // CPU time per sample
	counts   map[string]int
	overlays map[string]int
}

var sampleHeader = regexp.MustCompile(`^\S.*\s(\d+)\s+cpu-clock:`)

// parsePerfScript reads `perf script` output: a header line per sample
// (with the period before the event name), then one frame per line, then
// a blank line.
func parsePerfScript(r io.Reader) (perfBreakdown, error) {
	b := perfBreakdown{counts: map[string]int{}, overlays: map[string]int{}}
	var stack strings.Builder
	var period int64
	flush := func() {
		if stack.Len() == 0 {
			return
		}
		s := stack.String()
		b.samples++
		b.period = time.Duration(period)
		cat := otherCategory
		for _, c := range perfCategories {
			if c.re.MatchString(s) {
				cat = c.name
				break
			}
		}
		b.counts[cat]++
		for _, o := range perfOverlays {
			if o.re.MatchString(s) {
				b.overlays[o.name]++
			}
		}
		stack.Reset()
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] != ' ' && line[0] != '\t':
			flush()
			if m := sampleHeader.FindStringSubmatch(line); m != nil {
				period, _ = strconv.ParseInt(m[1], 10, 64)
			}
			stack.WriteString("sample\n") // a sample without frames still counts
		default:
			stack.WriteString(line)
			stack.WriteByte('\n')
		}
	}
	flush()
	return b, sc.Err()
}

// perfReport runs perf script on file and prints the breakdown, per
// handshake when handshakes > 0.
func perfReport(w io.Writer, file string, handshakes int) error {
	b, err := perfBreakdownOf(file)
	if err != nil {
		return err
	}
	b.print(w, file, handshakes)
	return nil
}

// perfBreakdownOf runs perf script on file and breaks its samples down.
func perfBreakdownOf(file string) (perfBreakdown, error) {
	cmd := exec.Command("perf", "script", "-i", file, "-F", "comm,tid,time,period,event,ip,sym")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return perfBreakdown{}, err
	}
	if err := cmd.Start(); err != nil {
		return perfBreakdown{}, fmt.Errorf("perf script: %w", err)
	}
	b, perr := parsePerfScript(out)
	if err := cmd.Wait(); err != nil {
		return perfBreakdown{}, fmt.Errorf("perf script: %w", err)
	}
	return b, perr
}

// rows are the breakdown's lines: share of the samples, µs per handshake
// ("-" without handshakes) and the category, overlays last (marked).
func (b perfBreakdown) rows(handshakes int) [][]string {
	row := func(name string, n int) []string {
		per := "-"
		if handshakes > 0 {
			per = fmt.Sprintf("%.1f", micros(time.Duration(n)*b.period)/float64(handshakes))
		}
		return []string{fmt.Sprintf("%.1f%%", 100*float64(n)/float64(b.samples)), per, name}
	}
	var rows [][]string
	for _, c := range perfCategories {
		rows = append(rows, row(c.name, b.counts[c.name]))
	}
	rows = append(rows, row(otherCategory, b.counts[otherCategory]))
	for _, o := range perfOverlays {
		rows = append(rows, row(overlayPrefix+o.name, b.overlays[o.name]))
	}
	return rows
}

// overlayPrefix marks an overlay's row: its samples are counted in a
// category too.
const overlayPrefix = "(overlay) "

// total is the CPU time the samples stand for.
func (b perfBreakdown) total() time.Duration { return time.Duration(b.samples) * b.period }

func (b perfBreakdown) print(w io.Writer, file string, handshakes int) {
	total := b.total()
	fmt.Fprintf(w, "\nwhere egressd's CPU goes (%s): %d samples, %s of CPU", file, b.samples, total.Round(time.Millisecond))
	if handshakes > 0 {
		fmt.Fprintf(w, ", %d handshakes: %s per handshake", handshakes, us(perConn(total, handshakes)))
	}
	fmt.Fprintln(w)
	if b.samples == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "share\tµs/conn\t  category (each sample counted once; overlays across the categories)")
	for _, r := range b.rows(handshakes) {
		fmt.Fprintf(tw, "%s\t%s\t  %s\n", r[0], r[1], r[2])
	}
	tw.Flush()
}
