package ha

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Health is a member's answer to /readyz: whether it can filter, and
// with which policy.
type Health struct {
	Member       string    `json:"member"`
	Ready        bool      `json:"ready"`
	Problems     []string  `json:"problems,omitempty"`
	PolicySHA256 string    `json:"policy_sha256"`
	CheckedAt    time.Time `json:"checked_at"`
}

// localCheck finds out whether this member can filter: egressd ready (its
// /readyz: queues bound, a policy with rules), the iptables rules in place,
// the links up. The rules check is a process (iptables): it runs apart
// from the rounds, every RulesEvery (Agent.Run), so a slow one never
// delays a round (and the peer's view of this member), and afresh, in
// the round, before a move.
type localCheck struct {
	cfg    *Config
	client *http.Client

	mu        sync.Mutex
	rulesAt   time.Time // zero until the first rules check
	rulesProb string    // "" when the last rules check passed
}

// checkRules runs the rules check and keeps its result.
func (l *localCheck) checkRules(ctx context.Context) string {
	prob := runRulesCheck(ctx, l.cfg.Local.RulesCheck)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rulesProb, l.rulesAt = prob, time.Now()
	return prob
}

// rules is the last rules check's problem ("" when it passed).
func (l *localCheck) rules() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rulesAt.IsZero() {
		return "the iptables rules are not checked yet"
	}
	return l.rulesProb
}

func newLocalCheck(cfg *Config) *localCheck {
	return &localCheck{cfg: cfg, client: &http.Client{Timeout: cfg.Timeout}}
}

// egressdReady is the part of egressd's /readyz that matters here.
type egressdReady struct {
	Status       string   `json:"status"`
	Problems     []string `json:"problems"`
	PolicySHA256 string   `json:"policy_sha256"`
}

func (l *localCheck) check(ctx context.Context, freshRules bool) Health {
	h := Health{Member: l.cfg.Member, CheckedAt: time.Now()}
	var r egressdReady
	if err := getJSON(ctx, l.client, l.cfg.Local.Readyz, &r); err != nil && r.Status == "" {
		h.Problems = append(h.Problems, "egressd: "+err.Error())
	} else {
		h.PolicySHA256 = r.PolicySHA256
		if r.Status != "ready" {
			h.Problems = append(h.Problems, "egressd not ready: "+strings.Join(r.Problems, "; "))
		}
	}
	for _, name := range l.cfg.Local.Interfaces {
		ifc, err := net.InterfaceByName(name)
		switch {
		case err != nil:
			h.Problems = append(h.Problems, fmt.Sprintf("interface %s: %v", name, err))
		case ifc.Flags&net.FlagUp == 0:
			h.Problems = append(h.Problems, "interface "+name+" is down")
		case ifc.Flags&net.FlagRunning == 0:
			h.Problems = append(h.Problems, "interface "+name+" has no carrier")
		}
	}
	if len(l.cfg.Local.RulesCheck) > 0 {
		prob := ""
		if freshRules {
			prob = l.checkRules(ctx)
		} else {
			prob = l.rules()
		}
		if prob != "" {
			h.Problems = append(h.Problems, prob)
		}
	}
	h.Ready = len(h.Problems) == 0
	return h
}

// runRulesCheck runs the rules check and returns "" or what it said is
// wrong.
func runRulesCheck(ctx context.Context, argv []string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil {
		return ""
	}
	last := strings.TrimSpace(out.String())
	if i := strings.LastIndexByte(last, '\n'); i >= 0 {
		last = last[i+1:]
	}
	return fmt.Sprintf("rules check %s: %v: %s", argv[0], err, last)
}

// getJSON fetches url and decodes its JSON body into v; a status other
// than 200 is an error (the body is still decoded, when it is JSON).
func getJSON(ctx context.Context, c *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			err = ue.Unwrap() // the cause, without Go's "Get URL:" prefix
		}
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if jerr := json.Unmarshal(body, v); jerr != nil {
		return fmt.Errorf("%s: %s, not JSON: %w", url, resp.Status, jerr)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}

// peerCheck is one check of the peer's /readyz.
type peerCheck struct {
	Health
	Up    bool   // it answered ready, as the peer this config names
	Error string // why not
}

func checkPeer(ctx context.Context, c *http.Client, cfg *Config) peerCheck {
	var p peerCheck
	err := getJSON(ctx, c, strings.TrimSuffix(cfg.Peer.URL, "/")+"/readyz", &p.Health)
	switch {
	case err != nil && p.Member == "":
		p.Error = err.Error()
	case p.Member != cfg.Peer.Name:
		// A wrong URL (this member itself, another pair's) must never
		// count as a live peer.
		p.Error = fmt.Sprintf("answered as member %q, not %q", p.Member, cfg.Peer.Name)
	case !p.Ready:
		p.Error = "not ready: " + strings.Join(p.Problems, "; ")
	default:
		p.Up = true
	}
	return p
}

// FetchStatus asks a member's agent for its /status (baseURL is its HA
// endpoint, "http://10.0.0.11:9146").
func FetchStatus(ctx context.Context, c *http.Client, baseURL string) (*Status, error) {
	var s Status
	if err := getJSON(ctx, c, strings.TrimSuffix(baseURL, "/")+"/status", &s); err != nil {
		return nil, err
	}
	return &s, nil
}
