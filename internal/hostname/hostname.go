package hostname

import (
	"fmt"
	"strings"
)

// Limits of RFC 1035 §2.3.4 in the dotted text form.
const (
	MaxLen      = 253 // octets, without the trailing dot
	MaxLabelLen = 63  // octets
)

// Problem is why a name is refused; OK is none. A Problem is an error, so
// errors.Is(err, hostname.IPLiteral) asks what an *Error is about.
type Problem uint8

const (
	OK           Problem = iota
	Empty                // no name: "" or "."
	EmptyLabel           // a leading dot, "..", or two trailing dots
	LabelTooLong         // a label over MaxLabelLen octets
	TooLong              // a name over MaxLen octets
	BadByte              // a byte other than letters, digits, '-', '_' and '.'
	IPLiteral            // the last label reads as a number
)

func (p Problem) String() string {
	switch p {
	case OK:
		return "ok"
	case Empty:
		return "empty name"
	case EmptyLabel:
		return "empty label"
	case LabelTooLong:
		return "label too long"
	case TooLong:
		return "name too long"
	case BadByte:
		return "byte not allowed in a name"
	case IPLiteral:
		return "IP address literal"
	}
	return fmt.Sprintf("unknown(%d)", uint8(p))
}

func (p Problem) Error() string { return p.String() }

// Error is a refused name: what is wrong, and where.
type Error struct {
	Name    string // the name as given
	Problem Problem
	// Name[At:End] is what Problem is about: the byte (BadByte), the label
	// (EmptyLabel, LabelTooLong, IPLiteral: the last label) or the name
	// without its trailing dot (Empty, TooLong).
	At, End int
}

func (e *Error) Error() string {
	part := e.Name[e.At:e.End]
	switch e.Problem {
	case EmptyLabel:
		return fmt.Sprintf("name %q: empty label at byte %d", e.Name, e.At)
	case LabelTooLong:
		return fmt.Sprintf("name %q: label %q of %d octets, more than %d", e.Name, part, len(part), MaxLabelLen)
	case TooLong:
		return fmt.Sprintf("name %q: %d octets, more than %d", e.Name, len(part), MaxLen)
	case BadByte:
		c := e.Name[e.At]
		if c > ' ' && c < 0x7f {
			return fmt.Sprintf("name %q: %q at byte %d is not a letter, digit, '-', '_' or '.'", e.Name, c, e.At)
		}
		return fmt.Sprintf("name %q: byte 0x%02x at %d is not a letter, digit, '-', '_' or '.'", e.Name, c, e.At)
	case IPLiteral:
		return fmt.Sprintf("name %q: its last label %q reads as a number: an IP address, not a name", e.Name, part)
	}
	return fmt.Sprintf("name %q: %v", e.Name, e.Problem)
}

// Unwrap returns the Problem.
func (e *Error) Unwrap() error { return e.Problem }

// Label returns the label of Name that At is in.
func (e *Error) Label() string {
	start := strings.LastIndexByte(e.Name[:e.At], '.') + 1
	end := len(e.Name)
	if i := strings.IndexByte(e.Name[e.At:], '.'); i >= 0 {
		end = e.At + i
	}
	return e.Name[start:end]
}

// fault is a refusal before it becomes an *Error.
type fault struct {
	problem Problem
	at, end int
}

// check validates a name and returns the length of its normal form (the
// name less one trailing dot) and whether it is already in normal form.
// The first problem found is the one reported, in this order: empty, too
// long, then byte by byte (empty label, bad byte, label too long), then an
// IP literal.
func check[T string | []byte](raw T) (n int, lower bool, f fault) {
	n = len(raw)
	if n > 0 && raw[n-1] == '.' {
		n--
	}
	switch {
	case n == 0:
		return 0, false, fault{Empty, 0, 0}
	case n > MaxLen:
		return 0, false, fault{TooLong, 0, n}
	}
	lower = true
	label, last := 0, 0 // length of the current label; where the last one starts
	for i := range n {
		c := raw[i]
		switch {
		case c == '.':
			if label == 0 {
				return 0, false, fault{EmptyLabel, i, i}
			}
			label, last = 0, i+1
			continue
		case c >= 'A' && c <= 'Z':
			lower = false
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return 0, false, fault{BadByte, i, i + 1}
		}
		label++
		if label > MaxLabelLen {
			end := i
			for end < n && raw[end] != '.' {
				end++
			}
			return 0, false, fault{LabelTooLong, i - label + 1, end}
		}
	}
	if label == 0 { // "a.." less its trailing dot ends in an empty label
		return 0, false, fault{EmptyLabel, n, n}
	}
	if numeric(raw[last:n]) {
		return 0, false, fault{IPLiteral, last, n}
	}
	return n, lower, fault{}
}

// numeric reports whether a label reads as a number to an address parser:
// all decimal digits (octal too), or "0x" and hex digits, in either case.
func numeric[T string | []byte](l T) bool {
	if len(l) >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X') {
		for i := 2; i < len(l); i++ {
			if c := l[i] | 0x20; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
		return true
	}
	for i := range len(l) {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return true
}

func (f fault) err(name string) error {
	return &Error{Name: name, Problem: f.problem, At: f.at, End: f.end}
}

// Check returns why raw is not a host name, or OK. It does not allocate.
func Check(raw []byte) Problem {
	_, _, f := check(raw)
	return f.problem
}

// Append checks raw and appends its normal form to dst. On refusal it
// returns dst unchanged and an *Error. It does not allocate when it accepts
// the name and dst has room for it (cap(dst)-len(dst) >= MaxLen is always
// enough).
func Append(dst, raw []byte) ([]byte, error) {
	n, _, f := check(raw)
	if f.problem != OK {
		return dst, f.err(string(raw))
	}
	for _, c := range raw[:n] {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst, nil
}

// Normalize checks s and returns its normal form, or an *Error. It returns
// s itself, without allocating, when s is already in normal form.
func Normalize(s string) (string, error) {
	n, lower, f := check(s)
	switch {
	case f.problem != OK:
		return "", f.err(s)
	case lower:
		return s[:n], nil
	}
	return strings.ToLower(s[:n]), nil // ASCII only, checked
}
