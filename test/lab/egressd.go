package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/egressd/egressd/internal/declogtest"
	"github.com/egressd/egressd/pkg/declog"
)

// Root returns the module's root directory (where go.mod is).
func Root() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the egressd module")
	}
	return filepath.Dir(mod), nil
}

// BuildEgressd builds cmd/egressd into dir and returns the binary's path.
func BuildEgressd(dir string) (string, error) {
	root, err := Root()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "egressd")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./cmd/egressd")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/egressd: %v: %s", err, out)
	}
	return bin, nil
}

// Rules are the arguments of scripts/iptables/egressd-iptables.sh apply.
type Rules struct {
	Queues   string // FIRST:COUNT; "" is 0:2
	FailOpen bool
	// SourceRate is --source-rate, packets per second one source may send
	// the queues; 0 leaves the script's default.
	SourceRate int
	IPTables   string // the iptables binary: "" (iptables), "iptables-legacy", "iptables-nft"
	// Extra are more arguments to apply, after the ones above.
	Extra []string
}

// Script runs egressd-iptables.sh with args in the NAT namespace.
func (l *Lab) Script(r Rules, args ...string) ([]byte, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	cmd := Command(context.Background(), l.NAT, filepath.Join(root, "scripts/iptables/egressd-iptables.sh"), args...)
	if r.IPTables != "" {
		cmd.Env = append(os.Environ(), "IPTABLES="+r.IPTables)
	}
	return cmd.CombinedOutput()
}

// ApplyRules installs egressd's rules in the NAT namespace. The namespace's
// deletion takes them along.
func (l *Lab) ApplyRules(r Rules) error {
	args := []string{"apply", "--private", PrivateIF, "--public", PublicIF}
	if r.Queues != "" {
		args = append(args, "--queues", r.Queues)
	}
	if r.FailOpen {
		args = append(args, "--fail-open")
	}
	if r.SourceRate > 0 {
		args = append(args, "--source-rate", strconv.Itoa(r.SourceRate))
	}
	args = append(args, r.Extra...)
	out, err := l.Script(r, args...)
	if err != nil {
		return fmt.Errorf("egressd-iptables.sh apply: %v: %s", err, out)
	}
	return nil
}

// ApplyPlainNAT installs plain forwarding with MASQUERADE and nothing of
// egressd: the baseline the benchmarks compare against.
func (l *Lab) ApplyPlainNAT() error {
	_, err := Exec(context.Background(), l.NAT, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", PublicIF, "-j", "MASQUERADE")
	return err
}

// EgressdOptions configure one egressd run in the lab.
type EgressdOptions struct {
	Binary string // path of the egressd binary (BuildEgressd)
	Policy string // the policy file's text
	// Config is YAML appended to the lab's config (queue, policy,
	// verify_dns pointing at the lab's resolver, metrics off).
	Config string
	// Env adds EGRESSD_* overrides.
	Env []string
	// Args are extra arguments to egressd run (e.g. --mode monitor).
	Args []string
}

// Decision is one decision-log line, in the schema's words.
type Decision = declogtest.Words

// Egressd is a running egressd in the NAT namespace.
type Egressd struct {
	ConfigPath, PolicyPath string

	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []Decision
	bad    []string      // stdout lines that are not decisions
	folds  []declog.Line // fold summaries: denied flows of a source counted, not logged one by one
	logs   bytes.Buffer
	change chan struct{} // closed and replaced on every new line
	exited chan struct{}
	err    error
}

// StartEgressd writes the config and policy and starts egressd run in the
// NAT namespace, returning once it reports that its queues are bound. It
// is stopped with the lab, if not before.
func (l *Lab) StartEgressd(o EgressdOptions) (*Egressd, error) {
	e := &Egressd{
		ConfigPath: filepath.Join(l.Dir, "egressd.yaml"),
		PolicyPath: filepath.Join(l.Dir, "policy.yaml"),
		change:     make(chan struct{}),
		exited:     make(chan struct{}),
	}
	if err := os.WriteFile(e.PolicyPath, []byte(o.Policy), 0o644); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`policy: %s
queue: {first: 0, count: 2}
verify_dns: {enabled: true, resolvers: ["%s:53"], timeout: 1s}
metrics: {listen: ""}
log: {format: json, level: info}
%s`, e.PolicyPath, DNSAddr, o.Config)
	if err := os.WriteFile(e.ConfigPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	args := append([]string{"run", "--config", e.ConfigPath}, o.Args...)
	// ip netns exec execs egressd in place: the PID is egressd's.
	e.cmd = Command(context.Background(), l.NAT, o.Binary, args...)
	e.cmd.Env = append(os.Environ(), o.Env...)
	if raceEnabled {
		// A race stops egressd at once, and the test that caused it fails.
		e.cmd.Env = append(e.cmd.Env, "GORACE=halt_on_error=1")
	}
	stdout, err := e.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := e.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := e.cmd.Start(); err != nil {
		return nil, err
	}
	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() { defer pipes.Done(); copyLines(stdout, e.addDecision) }()
	go func() { defer pipes.Done(); copyLines(stderr, e.addLog) }()
	go func() {
		pipes.Wait()
		err := e.cmd.Wait()
		e.mu.Lock()
		e.err = err
		e.mu.Unlock()
		close(e.exited)
	}()
	l.onClose(func() error { e.Kill(); return nil })
	if err := e.waitLog(`"msg":"egressd running"`, 15*time.Second); err != nil {
		e.Kill()
		return nil, fmt.Errorf("egressd did not start: %w\nlogs:\n%s", err, e.Logs())
	}
	return e, nil
}

func (e *Egressd) addDecision(line string) {
	d, err := declogtest.Parse([]byte(line))
	e.mu.Lock()
	defer e.mu.Unlock()
	switch l, ferr := declog.Parse([]byte(line)); {
	case err == nil:
		e.lines = append(e.lines, d)
	case ferr == nil && l.Folded > 0:
		e.folds = append(e.folds, l)
	default:
		e.bad = append(e.bad, line)
	}
	close(e.change)
	e.change = make(chan struct{})
}

func (e *Egressd) addLog(line string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.logs.WriteString(line)
	e.logs.WriteByte('\n')
	close(e.change)
	e.change = make(chan struct{})
}

// DataRace reports whether egressd (built with -race) found one.
func (e *Egressd) DataRace() bool { return strings.Contains(e.Logs(), "WARNING: DATA RACE") }

// Logs returns egressd's stderr so far.
func (e *Egressd) Logs() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.logs.String()
}

// Decisions returns the decision lines so far.
func (e *Egressd) Decisions() []Decision {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Decision(nil), e.lines...)
}

// Folds returns the fold summaries so far.
func (e *Egressd) Folds() []declog.Line {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]declog.Line(nil), e.folds...)
}

// NonDecisions returns stdout lines that were not decision lines (there
// should be none).
func (e *Egressd) NonDecisions() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.bad...)
}

// WaitDecision waits until a decision line matches and returns it.
func (e *Egressd) WaitDecision(match func(Decision) bool, timeout time.Duration) (Decision, error) {
	deadline := time.After(timeout)
	for {
		e.mu.Lock()
		for _, d := range e.lines {
			if match(d) {
				e.mu.Unlock()
				return d, nil
			}
		}
		ch := e.change
		e.mu.Unlock()
		select {
		case <-ch:
		case <-e.exited:
			return Decision{}, fmt.Errorf("egressd exited (%v) before a matching decision", e.ExitErr())
		case <-deadline:
			return Decision{}, fmt.Errorf("no matching decision within %s; decisions so far:\n%s", timeout, e.dump())
		}
	}
}

func (e *Egressd) dump() string {
	var b strings.Builder
	for _, d := range e.Decisions() {
		b.WriteString(d.Raw)
		b.WriteByte('\n')
	}
	return b.String()
}

func (e *Egressd) waitLog(sub string, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		e.mu.Lock()
		found := strings.Contains(e.logs.String(), sub)
		ch := e.change
		e.mu.Unlock()
		if found {
			return nil
		}
		select {
		case <-ch:
		case <-e.exited:
			return fmt.Errorf("exited: %v", e.ExitErr())
		case <-deadline:
			return fmt.Errorf("no log line with %s within %s", sub, timeout)
		}
	}
}

// WaitLog waits for a log line containing sub.
func (e *Egressd) WaitLog(sub string, timeout time.Duration) error { return e.waitLog(sub, timeout) }

// PID is egressd's process id (ip netns exec execs it in place).
func (e *Egressd) PID() int { return e.cmd.Process.Pid }

// Signal sends sig to egressd.
func (e *Egressd) Signal(sig os.Signal) error { return e.cmd.Process.Signal(sig) }

// Stop sends SIGTERM and waits up to 10s for egressd to exit, then kills it.
func (e *Egressd) Stop() error {
	select {
	case <-e.exited:
		return e.ExitErr()
	default:
	}
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-e.exited:
		return e.ExitErr()
	case <-time.After(10 * time.Second):
		e.Kill()
		return errors.New("egressd did not stop within 10s of SIGTERM; killed")
	}
}

// Kill ends egressd at once (SIGKILL), as a crash would, and waits for it.
func (e *Egressd) Kill() {
	select {
	case <-e.exited:
		return
	default:
	}
	_ = e.cmd.Process.Kill()
	<-e.exited
}

// Exited is closed when egressd has exited.
func (e *Egressd) Exited() <-chan struct{} { return e.exited }

// ExitErr is egressd's exit status once it has exited.
func (e *Egressd) ExitErr() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}
