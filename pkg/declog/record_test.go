package declog

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/pkg/policy"
)

func sample() Record {
	return Record{
		Time: time.Date(2026, 11, 24, 10, 0, 0, 123e6, time.UTC),
		Src:  netip.MustParseAddr("10.0.1.7"), SrcPort: 51234,
		Dst: netip.MustParseAddr("140.82.112.3"), DstPort: 443,
		Proto: policy.TCP, Name: "github.com", NameFrom: FromSNI, Verdict: policy.Allow, Enforced: true,
		Rule: "ci-runners-to-github", Reason: policy.ReasonRule, Latency: 41 * time.Microsecond,
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
	r.ECH, r.DNSCheck = true, CheckVerified
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

// TestParseRoundTrip: what AppendJSON writes, Parse reads back, field for
// field, for every enum value.
func TestParseRoundTrip(t *testing.T) {
	for _, mutate := range []func(*Record){
		func(*Record) {},
		func(r *Record) {
			r.Verdict, r.Reason, r.Rule, r.Enforced = policy.Deny, policy.ReasonDNSMismatch, "", true
		},
		func(r *Record) { r.Proto, r.NameFrom, r.ECH = policy.UDP, FromQUIC, true },
		func(r *Record) { r.NameFrom, r.DNSCheck = FromDNS, CheckGrace },
		func(r *Record) { r.NameFrom, r.Name, r.DNSCheck = FromNone, "", CheckSkipped },
		func(r *Record) { r.NameFrom, r.DNSCheck, r.Reason = FromHost, CheckTrusted, policy.ReasonDefault },
		func(r *Record) {
			r.DNSCheck, r.Reason, r.Verdict = CheckNotChecked, policy.ReasonNotTLSOrHTTP, policy.Deny
		},
	} {
		r := sample()
		mutate(&r)
		l, err := Parse(r.AppendJSON(nil))
		if err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		if diff := cmp.Diff(r, l.Record, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Errorf("(-wrote +read):\n%s", diff)
		}
	}
}

// TestParseRefuses: Parse says which field is wrong, and tells lines that
// are not decisions from broken ones.
func TestParseRefuses(t *testing.T) {
	good := string(func() []byte { r := sample(); return r.AppendJSON(nil) }())
	for _, tc := range []struct {
		line, want string
	}{
		{strings.Replace(good, `"verdict":"allow"`, `"verdict":"maybe"`, 1), "verdict"},
		{strings.Replace(good, `"reason":"rule"`, `"reason":"because"`, 1), "reason"},
		{strings.Replace(good, `"name_from":"sni"`, `"name_from":"guess"`, 1), "name_from"},
		{strings.Replace(good, `"proto":"tcp"`, `"proto":"sctp"`, 1), "proto"},
		{strings.Replace(good, `"dst":"140.82.112.3"`, `"dst":"nowhere"`, 1), "dst"},
		{`{"time":"2026-11-24T10:00:00Z","level":"INFO","msg":"egressd running"}`, ErrNotDecision.Error()},
		{`not json`, "invalid character"},
		{strings.Replace(good, `"rule":`, `"rules":"x","rule":`, 1), "unknown field"},
	} {
		_, err := Parse([]byte(tc.line))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one naming %q", tc.line, err, tc.want)
		}
	}
	fold := `{"time":"2026-11-24T10:00:10Z","src":"10.0.1.7","verdict":"deny","folded":1234,"since":"2026-11-24T10:00:00Z"}`
	if l, err := Parse([]byte(fold)); err != nil || l.Folded != 1234 || !l.Undecided || l.Src != netip.MustParseAddr("10.0.1.7") {
		t.Errorf("fold summary: %+v, %v", l, err)
	}
}
