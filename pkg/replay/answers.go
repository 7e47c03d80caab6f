package replay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/egressd/egressd/pkg/decide"
	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
)

// Answers are DNS answers given to replay (--resolve): each name's IPv4
// addresses. They stand for all of DNS: a name without answers here
// cannot be verified.
type Answers map[string][]netip.Addr

// ParseAnswers reads "name=IP" items separated by commas; an item that is
// only an address adds it to the name before it
// ("a.example=192.0.2.1,192.0.2.2,b.example=192.0.2.9"). Names are
// normalised as the policy's are.
func ParseAnswers(specs ...string) (Answers, error) {
	a := Answers{}
	name := ""
	for _, spec := range specs {
		for item := range strings.SplitSeq(spec, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			n, ip, hasName := strings.Cut(item, "=")
			if hasName {
				var err error
				if name, err = policy.NormalizeName(strings.TrimSpace(n)); err != nil {
					return nil, fmt.Errorf("%q: %v", item, err)
				}
			} else {
				ip = n
			}
			if name == "" {
				return nil, fmt.Errorf("%q: an address before any name; write NAME=IP", item)
			}
			addr, err := netip.ParseAddr(strings.TrimSpace(ip))
			if err != nil || !addr.Unmap().Is4() {
				return nil, fmt.Errorf("%q: %q is not an IPv4 address (egressd filters IPv4)", item, ip)
			}
			if addr = addr.Unmap(); !slices.Contains(a[name], addr) {
				a[name] = append(a[name], addr)
			}
		}
	}
	return a, nil
}

// errUnresolved is the verification error of a name that has no answers
// in --resolve: the flow is denied dns-error, as when the daemon's
// resolver fails, and the summary lists the name.
var errUnresolved = errors.New("no answers given for this name (--resolve)")

// staticVerifier is the engine's Verifier over fixed answers. The engine
// calls Verify from a goroutine of its own; replay waits for it
// (Engine.WaitVerifications) before it touches unresolved again.
type staticVerifier struct {
	answers    Answers
	unresolved map[string]int
}

func (v *staticVerifier) Contains(name string, addr netip.Addr) bool {
	return slices.Contains(v.answers[name], addr)
}

func (v *staticVerifier) Cached(name string, addr netip.Addr) decide.Answer {
	if v.Contains(name, addr) {
		return decide.Match
	}
	return 0
}

func (v *staticVerifier) Verify(_ context.Context, name string, addr netip.Addr, _ time.Time) (engine.Verification, error) {
	// The context's deadline is in capture time's terms and has long
	// passed on the wall clock: these answers need no waiting anyway.
	if _, ok := v.answers[name]; !ok {
		v.noteUnresolved(name)
		return engine.Verification{}, errUnresolved
	}
	if v.Contains(name, addr) {
		return engine.Verification{Answer: decide.Match}, nil
	}
	return engine.Verification{Answer: decide.Mismatch, Evidence: decide.Evidence{Addrs: len(v.answers[name])}}, nil
}

// maxUnresolved bounds the names the summary lists.
const maxUnresolved = 1000

func (v *staticVerifier) noteUnresolved(name string) {
	if _, ok := v.unresolved[name]; ok || len(v.unresolved) < maxUnresolved {
		v.unresolved[name]++
	}
}
