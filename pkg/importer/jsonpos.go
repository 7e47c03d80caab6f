package importer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// jnode is a JSON value with the line it starts on, so that a translated
// entry can name its source line. Objects keep their keys in order.
type jnode struct {
	kind  byte // '{', '[', 's' string, 'n' number, 'b' bool, '0' null
	str   string
	line  int
	keys  []string
	vals  map[string]*jnode
	items []*jnode
}

// maxJSONDepth bounds nesting: a rule group is a few levels deep.
const maxJSONDepth = 64

// parseJSON reads one JSON value with positions. Duplicate keys are an
// error, as is anything after the value.
func parseJSON(data []byte) (*jnode, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	lines := lineStarts(data)
	n, err := readJSON(dec, lines, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &lineError{lineAt(lines, dec.InputOffset()), "more than one JSON value"}
	}
	return n, nil
}

// lineStarts are the offsets where each line starts.
func lineStarts(data []byte) []int64 {
	out := []int64{0}
	for i, c := range data {
		if c == '\n' {
			out = append(out, int64(i+1))
		}
	}
	return out
}

// lineAt is the 1-based line of offset.
func lineAt(starts []int64, off int64) int {
	lo, hi := 0, len(starts)
	for lo+1 < hi {
		mid := (lo + hi) / 2
		if starts[mid] <= off {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo + 1
}

func readJSON(dec *json.Decoder, lines []int64, depth int) (*jnode, error) {
	if depth > maxJSONDepth {
		return nil, &lineError{lineAt(lines, dec.InputOffset()), "JSON nested too deep"}
	}
	start := dec.InputOffset()
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonErr(err, lines, start)
	}
	// InputOffset is where the token ended; a value's line is that of
	// its last byte, which is its only one for the scalars of a rule
	// group (strings hold no raw newline).
	n := &jnode{line: lineAt(lines, max(dec.InputOffset()-1, 0))}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n.kind, n.vals = '{', map[string]*jnode{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, jsonErr(err, lines, dec.InputOffset())
				}
				k, _ := kt.(string)
				if _, dup := n.vals[k]; dup {
					return nil, &lineError{lineAt(lines, dec.InputOffset()), fmt.Sprintf("key %q appears twice", k)}
				}
				v, err := readJSON(dec, lines, depth+1)
				if err != nil {
					return nil, err
				}
				n.keys = append(n.keys, k)
				n.vals[k] = v
			}
		case '[':
			n.kind = '['
			for dec.More() {
				v, err := readJSON(dec, lines, depth+1)
				if err != nil {
					return nil, err
				}
				n.items = append(n.items, v)
			}
		default:
			return nil, &lineError{n.line, fmt.Sprintf("unexpected %q", t)}
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, jsonErr(err, lines, dec.InputOffset())
		}
	case string:
		n.kind, n.str = 's', t
	case json.Number:
		n.kind, n.str = 'n', t.String()
	case bool:
		n.kind, n.str = 'b', fmt.Sprint(t)
	case nil:
		n.kind = '0'
	}
	return n, nil
}

func jsonErr(err error, lines []int64, off int64) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off = se.Offset
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return &lineError{lineAt(lines, off), "JSON: " + err.Error()}
}

// lineError is a problem at a line of the input.
type lineError struct {
	line int
	msg  string
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

// inFile says err as file:line: message.
func inFile(file string, err error) error {
	var le *lineError
	if errors.As(err, &le) {
		return fmt.Errorf("%s:%d: %s", file, le.line, le.msg)
	}
	return fmt.Errorf("%s: %w", file, err)
}

// get walks object keys; nil when one is missing or not an object.
func (n *jnode) get(keys ...string) *jnode {
	for _, k := range keys {
		if n == nil || n.kind != '{' {
			return nil
		}
		n = n.vals[k]
	}
	return n
}

// strings returns an array's string items (others are skipped, and
// reported through bad).
func (n *jnode) strings(bad func(*jnode)) []*jnode {
	if n == nil || n.kind != '[' {
		if n != nil {
			bad(n)
		}
		return nil
	}
	var out []*jnode
	for _, it := range n.items {
		if it.kind != 's' {
			bad(it)
			continue
		}
		out = append(out, it)
	}
	return out
}
