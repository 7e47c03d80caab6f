package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/test/lab"
)

// Scenarios: what the NAT namespace runs.
const (
	scenPlain   = "plain"   // forwarding and MASQUERADE only
	scenEgressd = "egressd" // egressd-iptables.sh rules and egressd
	scenSquid   = "squid"   // REDIRECT to Squid, ssl_bump peek + splice
	scenNginx   = "nginx"   // REDIRECT to nginx, stream ssl_preread
)

// scenario is one lab with one thing on its NAT.
type scenario struct {
	name    string
	lab     *lab.Lab
	sources []string // the client's addresses, used in turn
	egressd *lab.Egressd
	peer    *peer
	iperf   *peer // the long flows' server, in inet
}

var setups = map[string]func(ctx context.Context, s *scenario, egressdBin string) error{
	scenPlain:   func(_ context.Context, s *scenario, _ string) error { return s.lab.ApplyPlainNAT() },
	scenEgressd: func(_ context.Context, s *scenario, bin string) error { return s.startEgressd(bin, variant{}) },
	scenSquid: func(ctx context.Context, s *scenario, _ string) (err error) {
		s.peer, err = startSquid(ctx, s.lab)
		return err
	},
	scenNginx: func(ctx context.Context, s *scenario, _ string) (err error) {
		s.peer, err = startNginx(ctx, s.lab)
		return err
	},
}

// startEgressd applies egressd's rules (with v's extra arguments) and
// starts egressd (v's binary or bin, with v's environment).
func (s *scenario) startEgressd(bin string, v variant) error {
	if err := s.lab.ApplyRules(lab.Rules{Extra: v.rules}); err != nil {
		return err
	}
	if v.bin != "" {
		bin = v.bin
	}
	e, err := s.lab.StartEgressd(lab.EgressdOptions{Binary: bin, Policy: benchPolicy, Env: v.env})
	s.egressd = e
	return err
}

// newScenario builds a lab and sets name up in it (a scenario of setups,
// or one of variants); client is the benchlab binary, run as the load
// generator. A scenario is returned whenever a lab was made, for close.
func newScenario(ctx context.Context, name, egressdBin, client string, variants map[string]variant) (*scenario, error) {
	l, err := lab.Create()
	if l == nil {
		return nil, err
	}
	s := &scenario{name: name, lab: l}
	if err == nil {
		err = s.addSources()
	}
	if err == nil {
		if v, ok := variants[name]; ok {
			err = s.startEgressd(egressdBin, v)
		} else {
			err = setups[name](ctx, s, egressdBin)
		}
	}
	if err == nil {
		err = s.startIperf(ctx)
	}
	if err == nil {
		err = s.check(ctx, client)
	}
	return s, err
}

// addSources gives the client extraSources more addresses after its own.
func (s *scenario) addSources() error {
	s.sources = []string{lab.ClientAddr}
	for i := range extraSources {
		a := fmt.Sprintf("198.18.1.%d", 100+i)
		if out, err := exec.Command("ip", "-n", s.lab.Client.Name, "addr", "add", a+"/24", "dev", "c0").CombinedOutput(); err != nil {
			return fmt.Errorf("ip addr add %s: %v: %s", a, err, out)
		}
		s.sources = append(s.sources, a)
	}
	return nil
}

// check opens a few connections through the scenario before it is
// measured: a setup that does not carry traffic fails here, not in the
// tables.
func (s *scenario) check(ctx context.Context, client string) error {
	args := []string{"client", "-addr", lab.ServerAddr + ":443", "-sni", benchName, "-ca", s.lab.CA.PEMPath,
		"-workers", "1", "-warmup", "0s", "-duration", "300ms", "-src", strings.Join(s.sources, ",")}
	out, err := lab.Command(ctx, s.lab.Client, client, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("check connection: %v: %s", err, out)
	}
	r, err := decodeClient(out)
	if err != nil {
		return err
	}
	if r.Errors > 0 || r.Handshakes == 0 {
		return fmt.Errorf("check connection: %d handshakes, %d errors (%s)", r.Handshakes, r.Errors, r.ErrSample)
	}
	return nil
}

func decodeClient(out []byte) (clientResult, error) {
	var r clientResult
	if err := json.Unmarshal(bytes.TrimSpace(out), &r); err != nil {
		return r, fmt.Errorf("client output %q: %w", out, err)
	}
	return r, nil
}

func (s *scenario) close() error {
	for _, p := range []*peer{s.peer, s.iperf} {
		if p != nil {
			p.stop()
		}
	}
	return s.lab.Close() // stops egressd too
}

// natPIDs are the processes in the scenario's NAT namespace: egressd, or
// the proxy with its workers; none for plain NAT.
func (s *scenario) natPIDs() ([]int, error) {
	out, err := exec.Command("ip", "netns", "pids", s.lab.NAT.Name).Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns pids: %w", err)
	}
	var pids []int
	for f := range strings.FieldsSeq(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// settle waits until egressd's decision lines for the run have reached
// the bench (they come through a pipe, a little after the verdicts, later
// on a loaded machine): until there are want more than before, or none
// came for 300ms, or 3s have passed. A line that came later would be
// counted in neither run.
func (s *scenario) settle(before, want int) {
	if s.egressd == nil {
		return
	}
	n, last := len(s.egressd.Decisions()), time.Now()
	for deadline := last.Add(3 * time.Second); n-before < want && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		m := len(s.egressd.Decisions())
		if m != n {
			n, last = m, time.Now()
		} else if time.Since(last) > 300*time.Millisecond {
			return
		}
	}
}

func (s *scenario) egressdPID() (int, error) {
	pids, err := s.natPIDs()
	if err != nil {
		return 0, err
	}
	for _, pid := range pids {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "egressd" {
			return pid, nil
		}
	}
	return 0, errors.New("no egressd process in the NAT namespace")
}

// snapshot is what is read before and after a measurement.
type snapshot struct {
	procCPU   time.Duration // user+system time of the NAT's processes
	selfCPU   time.Duration // this process's (the lab's servers)
	hostBusy  time.Duration // non-idle time of every CPU of the machine
	queue     queueCounters
	decisions int
}

type queueCounters struct {
	Queued, QueueDropped, UserDropped uint64
}

func (s *scenario) snapshot() (snapshot, error) {
	var sn snapshot
	pids, err := s.natPIDs()
	if err != nil {
		return sn, err
	}
	for _, pid := range pids {
		cpu, err := procCPU(pid)
		if err != nil {
			return sn, err
		}
		sn.procCPU += cpu
	}
	if sn.selfCPU, err = procCPU(os.Getpid()); err != nil {
		return sn, err
	}
	if sn.hostBusy, err = hostBusy(); err != nil {
		return sn, err
	}
	if s.egressd != nil {
		pid, err := s.egressdPID()
		if err != nil {
			return sn, err
		}
		if sn.queue, err = readQueues(pid); err != nil {
			return sn, err
		}
		sn.decisions = len(s.egressd.Decisions())
	}
	return sn, nil
}

// clockTick is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clockTick = 10 * time.Millisecond

// procCPU reads a process's utime+stime (its threads', the dead ones
// included) from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseProcStat(string(b))
}

// parseProcStat returns utime+stime (fields 14 and 15) of a stat line;
// the command name (field 2) may hold spaces and parentheses.
func parseProcStat(line string) (time.Duration, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := strings.Fields(line[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, errors.New("stat: too few fields")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("stat: %w", err)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// hostBusy is the machine's non-idle CPU time (/proc/stat: all but idle
// and iowait), every process and softirq included.
func hostBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return parseHostBusy(line)
}

func parseHostBusy(line string) (time.Duration, error) {
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy uint64
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		// user nice system idle iowait irq softirq steal guest guest_nice;
		// guest time is already in user.
		if i == 3 || i == 4 || i >= 8 {
			continue
		}
		busy += n
	}
	return time.Duration(busy) * clockTick, nil
}

// readQueues sums the NFQUEUE counters of the namespace pid is in.
func readQueues(pid int) (queueCounters, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/netfilter/nfnetlink_queue", pid))
	if err != nil {
		return queueCounters{}, err
	}
	return parseQueues(b)
}

// parseQueues reads /proc/net/netfilter/nfnetlink_queue: queue number,
// peer port id, waiting, copy mode, copy range, queue_dropped,
// user_dropped, last packet id, 1.
func parseQueues(b []byte) (queueCounters, error) {
	var q queueCounters
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			return q, fmt.Errorf("nfnetlink_queue: short line %q", sc.Text())
		}
		var v [3]uint64
		for i, col := range []int{5, 6, 7} {
			n, err := strconv.ParseUint(f[col], 10, 64)
			if err != nil {
				return q, fmt.Errorf("nfnetlink_queue: %w", err)
			}
			v[i] = n
		}
		q.QueueDropped += v[0]
		q.UserDropped += v[1]
		q.Queued += v[2]
	}
	return q, sc.Err()
}

// result is one measurement.
type result struct {
	Scenario string       `json:"scenario"`
	Conc     int          `json:"concurrency"`
	Hello    string       `json:"hello"`
	Rep      int          `json:"rep"`
	Client   clientResult `json:"client"`

	ConnPerSec float64       `json:"conn_per_sec"`
	ProcCPU    time.Duration `json:"nat_proc_cpu_ns"` // CPU of the NAT's processes over the client's run
	ClientCPU  time.Duration `json:"client_cpu_ns"`   // the load generator's CPU
	ServerCPU  time.Duration `json:"server_cpu_ns"`   // this process's: the lab's servers and DNS
	HostCPU    time.Duration `json:"host_cpu_ns"`     // the machine's busy CPU over the client's run
	Queue      queueCounters `json:"queue"`           // deltas
	Decisions  int           `json:"decisions"`       // egressd decision lines over the run
	// egressd's own view (its decision lines): first held packet to verdict.
	DecisionP50 time.Duration `json:"decision_p50_ns"`
	DecisionP99 time.Duration `json:"decision_p99_ns"`
}

// measure runs the client once against s and reads the counters around
// it.
func (b *bench) measure(ctx context.Context, s *scenario, conc int, hello string, rep int) (result, error) {
	r := result{Scenario: s.name, Conc: conc, Hello: hello, Rep: rep}
	before, err := s.snapshot()
	if err != nil {
		return r, err
	}
	c, clientCPU, err := b.runClient(ctx, s, b.clientArgs(s, conc, hello, b.o.warmup, b.o.duration))
	if err != nil {
		return r, err
	}
	s.settle(before.decisions, c.Handshakes)
	after, err := s.snapshot()
	if err != nil {
		return r, err
	}
	r.Client = c
	r.ClientCPU = clientCPU
	r.ServerCPU = after.selfCPU - before.selfCPU
	r.ConnPerSec = float64(c.Conns) / c.Window.Seconds()
	r.ProcCPU = after.procCPU - before.procCPU
	r.HostCPU = after.hostBusy - before.hostBusy
	r.Queue = queueCounters{
		Queued:       after.queue.Queued - before.queue.Queued,
		QueueDropped: after.queue.QueueDropped - before.queue.QueueDropped,
		UserDropped:  after.queue.UserDropped - before.queue.UserDropped,
	}
	if s.egressd != nil {
		ds := s.egressd.Decisions()[before.decisions:after.decisions]
		r.Decisions = len(ds)
		lat := make([]time.Duration, 0, len(ds))
		for _, d := range ds {
			lat = append(lat, time.Duration(d.LatencyUS)*time.Microsecond)
		}
		slices.Sort(lat)
		r.DecisionP50, r.DecisionP99 = percentile(lat, 50), percentile(lat, 99)
	}
	return r, nil
}
