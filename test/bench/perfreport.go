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
// read whole, so a malloc under the netlink receive counts as receive.
var perfCategories = []struct {
	name string
	re   *regexp.Regexp
}{
	{"kernel: the packet re-injected by a verdict (rest of FORWARD, NAT, veth, the receiver's TCP)", regexp.MustCompile(`\bnfqnl_reinject\b`)},
	{"verdict send (go-nfqueue setVerdict, netlink, sendmsg)", regexp.MustCompile(`nfqueue/v2\.\(\*Nfqueue\)\.setVerdict|nfqnl_recv_verdict`)},
	{"netlink receive (recvmsg twice: peek, read; 4 KiB buffer each)", regexp.MustCompile(`mdlayher/netlink\.\(\*Conn\)\.Receive|netlink\.\(\*conn\)\.Receive`)},
	{"go-nfqueue message parsing", regexp.MustCompile(`nfqueue/v2\.(parseMsg|extractAttribute)`)},
	{"packet decoding (gopacket)", regexp.MustCompile(`pkg/nfq\.\(\*Decoder\)|google/gopacket`)},
	{"classify (flow head, ClientHello)", regexp.MustCompile(`egressd/pkg/classify\.`)},
	{"policy", regexp.MustCompile(`egressd/pkg/policy\.`)},
	{"DNS verification (resolve)", regexp.MustCompile(`egressd/pkg/resolve\.`)},
	{"decision log (declog, stdout)", regexp.MustCompile(`egressd/pkg/declog\.`)},
	{"engine (flow table, held packets, timers)", regexp.MustCompile(`egressd/pkg/nfq\.`)},
	{"mdlayher/socket: a watcher goroutine per recvmsg/sendmsg", regexp.MustCompile(`mdlayher/socket\.rwT`)},
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
	cmd := exec.Command("perf", "script", "-i", file, "-F", "comm,tid,time,period,event,ip,sym")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("perf script: %w", err)
	}
	b, perr := parsePerfScript(out)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("perf script: %w", err)
	}
	if perr != nil {
		return perr
	}
	b.print(w, file, handshakes)
	return nil
}

func (b perfBreakdown) print(w io.Writer, file string, handshakes int) {
	total := time.Duration(b.samples) * b.period
	fmt.Fprintf(w, "\nwhere egressd's CPU goes (%s): %d samples, %s of CPU", file, b.samples, total.Round(time.Millisecond))
	if handshakes > 0 {
		fmt.Fprintf(w, ", %d handshakes: %s per handshake", handshakes, us(perConn(total, handshakes)))
	}
	fmt.Fprintln(w)
	if b.samples == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(name string, n int) {
		per := "-"
		if handshakes > 0 {
			per = fmt.Sprintf("%.1f", micros(time.Duration(n)*b.period)/float64(handshakes))
		}
		fmt.Fprintf(tw, "%.1f%%\t%s\t  %s\n", 100*float64(n)/float64(b.samples), per, name)
	}
	fmt.Fprintln(tw, "share\tµs/conn\t  category (each sample counted once)")
	for _, c := range perfCategories {
		row(c.name, b.counts[c.name])
	}
	row(otherCategory, b.counts[otherCategory])
	fmt.Fprintln(tw, "\t\t  overlays (across the categories):")
	for _, o := range perfOverlays {
		row(o.name, b.overlays[o.name])
	}
	tw.Flush()
}
