package suggest

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/publicsuffix"

	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

var t0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

// rec is a monitor-mode decision line.
func rec(src, dst string, port uint16, name string, from declog.NameFrom, at time.Duration) declog.Record {
	r := declog.Record{Time: t0.Add(at), Src: netip.MustParseAddr(src), SrcPort: 40000, Dst: netip.MustParseAddr(dst), DstPort: port,
		Proto: policy.TCP, Name: name, NameFrom: from, Verdict: policy.Deny, Rule: policy.DefaultRule, Reason: policy.ReasonDefault}
	if from == declog.FromQUIC {
		r.Proto = policy.UDP
	}
	return r
}

// observed is a week of a small VPC, monitor mode: what each case of the
// package comment needs.
func observed() []declog.Record {
	sni, dns, none := declog.FromSNI, declog.FromDNS, declog.FromNone
	rs := []declog.Record{
		// Four github.com siblings and the apex: ".github.com".
		rec("10.0.1.7", "140.82.112.3", 443, "github.com", sni, 0),
		rec("10.0.1.8", "140.82.112.4", 443, "api.github.com", sni, time.Hour),
		rec("10.0.1.7", "140.82.112.5", 443, "codeload.github.com", sni, 2*time.Hour),
		rec("10.0.1.9", "140.82.112.6", 443, "uploads.github.com", sni, 3*time.Hour),
		// Siblings under a public suffix: never ".githubusercontent.com".
		rec("10.0.1.7", "185.199.108.133", 443, "raw.githubusercontent.com", sni, 0),
		rec("10.0.1.7", "185.199.108.134", 443, "objects.githubusercontent.com", sni, 0),
		rec("10.0.1.7", "185.199.108.135", 443, "release-assets.githubusercontent.com", sni, 0),
		// S3 buckets (under the suffix s3.amazonaws.com), and AWS APIs
		// under amazonaws.com, which holds public suffixes: exact.
		rec("10.0.1.7", "52.216.1.1", 443, "a.s3.amazonaws.com", sni, 0),
		rec("10.0.1.7", "52.216.1.2", 443, "b.s3.amazonaws.com", sni, 0),
		rec("10.0.1.7", "52.216.1.3", 443, "c.s3.amazonaws.com", sni, 0),
		rec("10.0.1.7", "52.94.1.1", 443, "sts.amazonaws.com", sni, 0),
		rec("10.0.1.7", "52.94.1.2", 443, "ec2.amazonaws.com", sni, 0),
		rec("10.0.1.7", "52.94.1.3", 443, "iam.amazonaws.com", sni, 0),
		// Two siblings are not enough.
		rec("10.0.1.7", "104.16.1.1", 443, "registry.npmjs.org", sni, 0),
		rec("10.0.1.7", "104.16.1.2", 443, "www.npmjs.org", sni, 0),
		// git over SSH: a name matched by DNS on a port without one.
		rec("10.0.1.7", "140.82.112.3", 22, "github.com", dns, 4*time.Hour),
		// QUIC and TCP on 443: one port.
		rec("10.0.1.7", "142.250.1.1", 443, "www.google.com", declog.FromQUIC, 0),
		// Another subnet.
		rec("10.0.2.5", "151.101.1.1", 443, "pypi.org", sni, 0),
		rec("10.0.2.5", "151.101.1.2", 443, "files.pythonhosted.org", sni, 0),
		rec("10.0.2.6", "199.232.1.1", 80, "deb.debian.org", declog.FromHost, 0),
		// For a person: an IP address for a name, no name, a name that
		// was not where DNS puts it.
		rec("10.0.2.6", "203.0.113.9", 80, "203.0.113.9", declog.FromHost, 0),
		rec("10.0.3.4", "198.51.100.5", 22, "", none, 0),
		rec("10.0.3.4", "198.51.100.5", 22, "", none, time.Minute),
	}
	mismatch := rec("10.0.1.7", "198.51.100.66", 443, "api.github.com", sni, 0)
	mismatch.Reason = policy.ReasonDNSMismatch
	incomplete := rec("10.0.1.7", "198.51.100.67", 443, "", none, 0)
	incomplete.Rule, incomplete.Reason = "", policy.ReasonIncomplete
	return append(rs, mismatch, incomplete)
}

func build(t *testing.T, rs []declog.Record) *Suggestion {
	t.Helper()
	b := NewBuilder(Options{})
	for i := range rs {
		b.Add(&rs[i])
	}
	return b.Result()
}

func TestSuggestRules(t *testing.T) {
	s := build(t, observed())
	type rule struct {
		Name    string
		Ports   []uint16
		Domains []string
	}
	var got []rule
	for _, r := range s.Rules {
		var ds []string
		for _, e := range r.Entries {
			ds = append(ds, e.Domain)
		}
		got = append(got, rule{r.Name, r.Ports, ds})
	}
	want := []rule{
		{"observed-10.0.1.0_24-22", []uint16{22}, []string{"github.com"}},
		{"observed-10.0.1.0_24-443", []uint16{443}, []string{
			"ec2.amazonaws.com", "iam.amazonaws.com", "a.s3.amazonaws.com", "b.s3.amazonaws.com", "c.s3.amazonaws.com", "sts.amazonaws.com",
			".github.com", "objects.githubusercontent.com", "raw.githubusercontent.com", "release-assets.githubusercontent.com",
			"www.google.com", "registry.npmjs.org", "www.npmjs.org"}},
		{"observed-10.0.2.0_24-443", []uint16{443}, []string{"pypi.org", "files.pythonhosted.org"}},
		{"observed-10.0.2.0_24-80", []uint16{80}, []string{"deb.debian.org"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	gh := s.Rules[1].Entries[6]
	if gh.Flows != 4 || gh.Sources != 3 || !gh.First.Equal(t0) || !gh.Last.Equal(t0.Add(3*time.Hour)) ||
		strings.Join(gh.Covers, ",") != "api.github.com,codeload.github.com,github.com,uploads.github.com" {
		t.Errorf(".github.com entry: %+v", gh)
	}
	var unnamed []string
	for _, u := range s.Unnamed {
		unnamed = append(unnamed, u.Group.String()+" "+u.Dst.String()+" "+u.Why)
	}
	wantUnnamed := []string{
		"10.0.1.0/24 198.51.100.66 the name was not verified at the destination (dns-mismatch)",
		"10.0.2.0/24 203.0.113.9 an IP address, not a name",
		"10.0.3.0/24 198.51.100.5 no name",
	}
	if diff := cmp.Diff(wantUnnamed, unnamed); diff != "" {
		t.Errorf("listed for a person (-want +got):\n%s", diff)
	}
	if s.Skipped["incomplete"] != 1 || s.Lines != 25 {
		t.Errorf("skipped %v, lines %d", s.Skipped, s.Lines)
	}
}

// TestSuggestionIsAPolicy: the YAML compiles, its tests pass, and it
// decides each observed flow allow and unrelated names deny.
func TestSuggestionIsAPolicy(t *testing.T) {
	rs := observed()
	var out bytes.Buffer
	if err := build(t, rs).WriteYAML(&out); err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse("suggested.yaml", out.Bytes(), policy.Options{})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if fails := p.RunTests(); len(fails) > 0 || p.Stats().Tests != 4 {
		t.Errorf("tests %d, failing: %v", p.Stats().Tests, fails)
	}
	for _, want := range []string{
		"      - .github.com                           # 4 flows, 3 sources, first 2026-11-24T10:00:00Z, last 2026-11-24T13:00:00Z; seen: api.github.com, codeload.github.com, github.com, uploads.github.com\n",
		"#   10.0.3.0/24 -> 198.51.100.5:22/tcp: no name; 2 flows, 1 source, first 2026-11-24T10:00:00Z, last 2026-11-24T10:01:00Z\n",
		"#   10.0.2.0/24 -> 203.0.113.9:80/tcp \"203.0.113.9\": an IP address, not a name; 1 flow, 1 source, seen 2026-11-24T10:00:00Z\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the YAML lacks %q:\n%s", want, out.String())
		}
	}
	for _, r := range rs[:20] {
		q := policy.Query{Src: r.Src, Dst: r.Dst, Port: r.DstPort, Proto: r.Proto, Inspected: r.NameFrom != declog.FromDNS, Name: r.Name}
		if !q.Inspected {
			q.Name, q.DNSNames = "", []string{r.Name}
		}
		if d := p.Decide(q); d.Verdict != policy.Allow {
			t.Errorf("observed %s -> %s:%d (%s) is not allowed: %+v", r.Src, r.Name, r.DstPort, r.NameFrom, d)
		}
	}
	for _, n := range []string{"gist.githubusercontent.com", "d.s3.amazonaws.com", "ssm.amazonaws.com", "www.github.io", "evil.example.net", "docs.npmjs.org"} {
		if d := p.Decide(policy.Query{Src: netip.MustParseAddr("10.0.1.7"), Dst: netip.MustParseAddr("203.0.113.1"), Port: 443, Proto: policy.TCP, Inspected: true, Name: n}); d.Verdict != policy.Deny {
			t.Errorf("unobserved %s is allowed by %s", n, d.Rule)
		}
	}
}

// TestSuffixFolds: siblings fold level by level, at the threshold, and
// never over a public suffix.
func TestSuffixFolds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		names []string
		min   int
		want  []string
	}{
		{"below the threshold", []string{"a.example.com", "b.example.com"}, 3, []string{"a.example.com", "b.example.com"}},
		{"at the threshold", []string{"a.example.com", "b.example.com", "c.example.com"}, 3, []string{".example.com"}},
		{"never", []string{"a.example.com", "b.example.com", "c.example.com"}, -1, []string{"a.example.com", "b.example.com", "c.example.com"}},
		{"two levels", []string{"a.x.example.com", "b.x.example.com", "c.x.example.com", "v.example.com", "w.example.com"}, 3, []string{".example.com"}},
		{"a public suffix", []string{"a.github.io", "b.github.io", "c.github.io"}, 3, []string{"a.github.io", "b.github.io", "c.github.io"}},
		{"a TLD", []string{"a.com", "b.com", "c.com"}, 3, []string{"a.com", "b.com", "c.com"}},
		{"under a wildcard suffix", []string{"a.b.digitaloceanspaces.com", "c.b.digitaloceanspaces.com", "d.b.digitaloceanspaces.com", "e.digitaloceanspaces.com", "f.digitaloceanspaces.com"}, 3,
			[]string{"a.b.digitaloceanspaces.com", "c.b.digitaloceanspaces.com", "d.b.digitaloceanspaces.com", "e.digitaloceanspaces.com", "f.digitaloceanspaces.com"}},
		{"a name that holds suffixes", []string{"a.on.aws", "b.on.aws", "c.on.aws"}, 3, []string{"a.on.aws", "b.on.aws", "c.on.aws"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBuilder(Options{MinSiblings: tc.min})
			for _, n := range tc.names {
				r := rec("10.0.1.7", "203.0.113.1", 443, n, declog.FromSNI, 0)
				b.Add(&r)
			}
			var got []string
			for _, e := range b.Result().Rules[0].Entries {
				got = append(got, e.Domain)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestSuffixHosts holds the list of names that hold public suffixes to the
// public suffix list: each has one below it.
func TestSuffixHosts(t *testing.T) {
	below := map[string]string{"amazonaws.com": "s3.amazonaws.com", "windows.net": "blob.core.windows.net", "on.aws": "lambda-url.us-east-1.on.aws"}
	for _, h := range suffixHosts {
		child, ok := below[h]
		if !ok {
			t.Errorf("%s: no known public suffix below it in the test", h)
			continue
		}
		if s, _ := publicsuffix.PublicSuffix("bucket." + child); s != child {
			t.Errorf("%s is no public suffix (%s is), so %s need not be listed", child, s, h)
		}
	}
}
