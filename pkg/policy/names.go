package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/egressd/egressd/internal/hostname"
	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// idnaProfile maps a name as typed in a policy to its ASCII (punycode)
// form. It is the lookup profile of UTS #46 (RFC 5891 §5: U-labels to
// A-labels, A-labels checked to be valid punycode of a valid U-label)
// without the STD3 restriction, so that underscore labels
// (_service.example.com) remain writable; the result then meets the one
// check of host names, hostname.Normalize.
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.Transitional(false),
	idna.BidiRule(),
	idna.StrictDomainName(false),
)

// patternKind is how a domain entry matches.
type patternKind uint8

const (
	exact      patternKind = iota // "example.com": that name only
	anySub                        // "*.example.com": subdomains at any depth, not the apex
	apexAndSub                    // ".example.com": the apex and every subdomain
)

func (k patternKind) String() string {
	switch k {
	case exact:
		return "exact"
	case anySub:
		return "subdomains"
	case apexAndSub:
		return "apex and subdomains"
	}
	return fmt.Sprintf("unknown(%d)", uint8(k))
}

// pattern is a compiled domain entry: its kind and its normalised base name
// (for "*.example.com" and ".example.com", "example.com").
type pattern struct {
	kind patternKind
	base string
}

func (p pattern) String() string {
	switch p.kind {
	case anySub:
		return "*." + p.base
	case apexAndSub:
		return "." + p.base
	}
	return p.base
}

// parsePattern validates and normalises one entry of a rule's domains.
// The error says what is wrong and, where one is known, the fix.
func parsePattern(s string) (pattern, error) {
	raw := s
	var p pattern
	switch {
	case s == "" || strings.TrimSpace(s) != s:
		return p, fmt.Errorf("domain %q is empty or has surrounding spaces", raw)
	case s == "*" || s == "*." || s == "." || s == "*.*":
		return p, fmt.Errorf("domain %q matches every name; use the policy's default instead", raw)
	case strings.HasPrefix(s, "*."):
		p.kind, s = anySub, s[2:]
	case strings.HasPrefix(s, "."):
		p.kind, s = apexAndSub, s[1:]
	}
	if strings.Contains(s, "*") {
		return p, fmt.Errorf("domain %q: a wildcard is allowed only as the whole first label (\"*.example.com\")", raw)
	}
	base, err := normalizeName(s)
	if err != nil {
		return p, fmt.Errorf("domain %q: %w", raw, err)
	}
	p.base = base
	return p, nil
}

// normalizeName returns the canonical form of a name written by a person:
// lowercase, punycode, without a trailing dot.
//
// The rules are the ones every name in egressd meets (internal/hostname:
// what classify accepts off the wire, what resolve asks), so a policy can
// name exactly the names a client can send. On top of them, as written by
// people: IP addresses get a message that points to cidrs, and a name with
// a non-ASCII or "xn--" label goes through IDNA first (RFC 5890, 5891 §5),
// which converts U-labels, refuses invalid punycode, and applies UTS #46's
// hyphen rule to that name's labels.
func normalizeName(s string) (string, error) {
	if _, err := netip.ParseAddr(strings.Trim(strings.TrimSuffix(s, "."), "[]")); err == nil {
		return "", fmt.Errorf("this is an IP address, not a name; put it in the rule's cidrs")
	}
	ascii := s
	// Non-ASCII names are converted; ASCII names with an "xn--" label are
	// run through the same profile so that invalid punycode is refused.
	if !isASCII(s) || strings.Contains(strings.ToLower(s), "xn--") {
		var err error
		ascii, err = idnaProfile.ToASCII(s)
		if err != nil {
			return "", fmt.Errorf("not a valid internationalised name: %v", err)
		}
	}
	n, err := hostname.Normalize(ascii)
	var e *hostname.Error
	if !errors.As(err, &e) {
		return n, err
	}
	part := e.Name[e.At:e.End]
	switch e.Problem {
	case hostname.Empty:
		return "", fmt.Errorf("empty name")
	case hostname.TooLong:
		return "", fmt.Errorf("name is %d characters long; the limit is %d", len(part), hostname.MaxLen)
	case hostname.EmptyLabel:
		return "", fmt.Errorf("has an empty label")
	case hostname.LabelTooLong:
		return "", fmt.Errorf("label %q is %d characters long; the limit is %d", part, len(part), hostname.MaxLabelLen)
	case hostname.BadByte:
		return "", fmt.Errorf("label %q has the character %q; names are letters, digits, '-' and '_' (write internationalised names as typed or as \"xn--\")", e.Label(), e.Name[e.At])
	case hostname.IPLiteral:
		return "", fmt.Errorf("its last label %q is a number, so it reads as an IP address, not a name; put addresses in the rule's cidrs", part)
	}
	return "", err
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// NormalizeName is normalizeName for callers outside the package (explain's
// --name): lowercase, punycode, no trailing dot, validated.
func NormalizeName(s string) (string, error) { return normalizeName(s) }

// coversPublicSuffix reports whether a wildcard pattern lets through every
// name under a public suffix (".com", "*.github.io", "*.s3.amazonaws.com"):
// anyone can register a name there, so the rule would let anyone out.
func coversPublicSuffix(p pattern) bool {
	if p.kind == exact {
		return false
	}
	suffix, _ := publicsuffix.PublicSuffix(p.base)
	return suffix == p.base
}

// echPublicNames are the outer (public) names of Encrypted Client Hello
// providers. A hello to one of them hides its real destination, so allowing
// the public name allows every site behind the provider.
var echPublicNames = []string{"cloudflare-ech.com"}

// coversECHPublicName returns the ECH public name a pattern matches, if any.
func coversECHPublicName(p pattern) string {
	for _, n := range echPublicNames {
		if p.matches(n) {
			return n
		}
	}
	return ""
}

// matches reports whether a normalised name matches the pattern. It is the
// reference used by Explain and by the tests; Decide uses the index.
func (p pattern) matches(name string) bool {
	switch p.kind {
	case exact:
		return name == p.base
	case anySub:
		return isSubdomain(name, p.base)
	case apexAndSub:
		return name == p.base || isSubdomain(name, p.base)
	}
	return false
}

// isSubdomain reports whether name is a proper subdomain of base, at a label
// boundary ("a.example.com" under "example.com", not "badexample.com").
func isSubdomain(name, base string) bool {
	return len(name) > len(base)+1 &&
		strings.HasSuffix(name, base) &&
		name[len(name)-len(base)-1] == '.'
}
