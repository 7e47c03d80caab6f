// Package declogtest compares decision logs in tests: the daemon's lines
// against replay's for the same traffic.
package declogtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
)

// Canonical returns a decision log's lines without the fields that differ
// between two runs over the same traffic ("time", "latency_us"), each
// re-encoded with its keys sorted, the lines sorted: two logs of the same
// decisions, in whatever order, give the same list.
func Canonical(log []byte) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("line %d: %w: %s", n, err, sc.Bytes())
		}
		delete(m, "time")
		delete(m, "latency_us")
		b, err := json.Marshal(m) // map keys come out sorted
		if err != nil {
			return nil, err
		}
		out = append(out, string(b))
	}
	slices.Sort(out)
	return out, sc.Err()
}
