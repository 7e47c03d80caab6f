package declog

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func sample() Record {
	return Record{
		Time: time.Date(2026, 11, 24, 10, 0, 0, 123e6, time.UTC),
		Src:  netip.MustParseAddr("10.0.1.7"), SrcPort: 51234,
		Dst: netip.MustParseAddr("140.82.112.3"), DstPort: 443,
		Proto: "tcp", Name: "github.com", NameFrom: "sni", Verdict: "allow", Enforced: true,
		Rule: "ci-runners-to-github", Reason: "rule", Latency: 41 * time.Microsecond,
	}
}

// TestSchema holds AppendJSON to design.md's example line, byte for byte.
func TestSchema(t *testing.T) {
	r := sample()
	got := string(r.AppendJSON(nil))
	want := `{"time":"2026-11-24T10:00:00.123Z","src":"10.0.1.7","sport":51234,"dst":"140.82.112.3",` +
		`"dport":443,"proto":"tcp","name":"github.com","name_from":"sni","verdict":"allow",` +
		`"enforced":true,"rule":"ci-runners-to-github","reason":"rule","latency_us":41}` + "\n"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	r.ECH, r.DNSCheck = true, "verified"
	if got := string(r.AppendJSON(nil)); !strings.HasSuffix(got, `"latency_us":41,"ech":true,"dns_check":"verified"}`+"\n") {
		t.Errorf("optional fields: %s", got)
	}
}

// TestHostileStrings: whatever a name holds, the line stays one valid JSON
// object and the value round-trips (invalid UTF-8 as U+FFFD).
func TestHostileStrings(t *testing.T) {
	for s, want := range map[string]string{
		"a\"b\\c": "a\"b\\c", "line\nbreak": "line\nbreak", "nul\x00": "nul\x00", "del\x7f": "del\x7f",
		"bad\xff\xfeutf8": "bad\ufffd\ufffdutf8", "ünïcode": "ünïcode", "\u2028": "\u2028",
	} {
		r := sample()
		r.Name = s
		line := r.AppendJSON(nil)
		if strings.Count(string(line), "\n") != 1 {
			t.Errorf("%q: the line breaks: %q", s, line)
		}
		var back map[string]any
		if err := json.Unmarshal(line, &back); err != nil {
			t.Fatalf("%q: invalid JSON %q: %v", s, line, err)
		}
		if back["name"] != want {
			t.Errorf("%q came back as %q", s, back["name"])
		}
	}
}

func TestAppendAllocsNothing(t *testing.T) {
	r := sample()
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { buf = r.AppendJSON(buf[:0]) }); n != 0 {
		t.Errorf("AppendJSON allocates %v times with room in the buffer", n)
	}
}
