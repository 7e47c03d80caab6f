package resolve

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
)

// testQ is the question most answer tests reply to.
var testQ = question{id: 0x1234, name: "allowed.example.test.", qtype: dns.TypeA}

// mustRR parses one record in zone-file syntax.
func mustRR(t testing.TB, s string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatalf("dns.NewRR(%q): %v", s, err)
	}
	return rr
}

// replyTo builds a well-formed response to q with the given rcode and
// sections (records in zone-file syntax).
func replyTo(t testing.TB, q question, rcode int, answer, ns []string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.Id = q.id
	m.Response = true
	m.RecursionDesired = true
	m.RecursionAvailable = true
	m.Rcode = rcode
	m.Question = []dns.Question{{Name: q.name, Qtype: q.qtype, Qclass: dns.ClassINET}}
	for _, s := range answer {
		m.Answer = append(m.Answer, mustRR(t, s))
	}
	for _, s := range ns {
		m.Ns = append(m.Ns, mustRR(t, s))
	}
	return m
}

func mustPack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("pack: %v", err)
	}
	return b
}

func ta(s string, ttl uint32) ttlAddr { return ttlAddr{addr: netip.MustParseAddr(s), ttl: ttl} }

var cmpAnswer = cmp.Options{cmp.AllowUnexported(answer{}, ttlAddr{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })}

func TestReadAnswer(t *testing.T) {
	const soa = "example.test. 600 IN SOA ns.example.test. host.example.test. 1 3600 600 86400 60"
	aaaaQ := question{id: 7, name: "allowed.example.test.", qtype: dns.TypeAAAA}
	tests := []struct {
		name   string
		q      question
		rcode  int
		answer []string
		ns     []string
		want   answer
	}{
		{
			name:   "two A records",
			answer: []string{"allowed.example.test. 300 IN A 203.0.113.10", "allowed.example.test. 200 IN A 203.0.113.11"},
			want:   answer{addrs: []ttlAddr{ta("203.0.113.10", 300), ta("203.0.113.11", 200)}},
		},
		{
			name: "owner case differs from the question (0x20 and resolvers that keep case)",
			answer: []string{
				"ALLOWED.Example.TEST. 300 IN A 203.0.113.10",
			},
			want: answer{addrs: []ttlAddr{ta("203.0.113.10", 300)}},
		},
		{
			name: "CNAME chain: the TTL is the smallest along it",
			answer: []string{
				"allowed.example.test. 600 IN CNAME a.cdn.test.",
				"a.cdn.test. 30 IN CNAME b.Cdn.test.",
				"b.cdn.test. 120 IN A 203.0.113.20",
				"B.cdn.test. 10 IN A 203.0.113.21",
			},
			want: answer{addrs: []ttlAddr{ta("203.0.113.20", 30), ta("203.0.113.21", 10)}},
		},
		{
			name: "chain records out of order",
			answer: []string{
				"b.cdn.test. 120 IN A 203.0.113.20",
				"a.cdn.test. 60 IN CNAME b.cdn.test.",
				"allowed.example.test. 600 IN CNAME a.cdn.test.",
			},
			want: answer{addrs: []ttlAddr{ta("203.0.113.20", 60)}},
		},
		{
			name: "an A record for an unrelated owner is not trusted",
			answer: []string{
				"allowed.example.test. 300 IN A 203.0.113.10",
				"attacker.test. 300 IN A 198.18.0.66",
			},
			want: answer{addrs: []ttlAddr{ta("203.0.113.10", 300)}},
		},
		{
			name:   "only an unrelated owner: NODATA, nothing trusted",
			answer: []string{"attacker.test. 300 IN A 198.18.0.66"},
			ns:     []string{soa},
			want:   answer{negTTL: 60, hasSOA: true},
		},
		{
			name: "A beside a CNAME on the question name is off the chain (RFC 1034 §3.6.2)",
			answer: []string{
				"allowed.example.test. 300 IN A 198.18.0.66",
				"allowed.example.test. 300 IN CNAME a.cdn.test.",
				"a.cdn.test. 300 IN A 203.0.113.20",
			},
			want: answer{addrs: []ttlAddr{ta("203.0.113.20", 300)}},
		},
		{
			name: "A on an intermediate chain name is off the chain",
			answer: []string{
				"allowed.example.test. 300 IN CNAME a.cdn.test.",
				"a.cdn.test. 300 IN A 198.18.0.66",
				"a.cdn.test. 300 IN CNAME b.cdn.test.",
				"b.cdn.test. 300 IN A 203.0.113.20",
			},
			want: answer{addrs: []ttlAddr{ta("203.0.113.20", 300)}},
		},
		{
			name:   "identical duplicate CNAMEs are one link",
			answer: []string{"allowed.example.test. 300 IN CNAME a.cdn.test.", "allowed.example.test. 300 IN CNAME A.cdn.test.", "a.cdn.test. 300 IN A 203.0.113.20"},
			want:   answer{addrs: []ttlAddr{ta("203.0.113.20", 300)}},
		},
		{
			name:   "chain of exactly maxChain links",
			answer: chainRRs(maxChain),
			want:   answer{addrs: []ttlAddr{ta("203.0.113.30", 300)}},
		},
		{
			name:   "chain ending without an address: NODATA",
			answer: []string{"allowed.example.test. 300 IN CNAME gone.cdn.test."},
			ns:     []string{"cdn.test. 100 IN SOA ns.cdn.test. host.cdn.test. 1 3600 600 86400 500"},
			want:   answer{negTTL: 100, hasSOA: true},
		},
		{
			name:   "A record in an AAAA answer is ignored",
			q:      aaaaQ,
			answer: []string{"allowed.example.test. 300 IN A 203.0.113.10", "allowed.example.test. 300 IN AAAA 2001:db8::10"},
			want:   answer{addrs: []ttlAddr{ta("2001:db8::10", 300)}},
		},
		{
			name:   "IPv4-mapped AAAA is ignored (IPv4 is verified by A only)",
			q:      aaaaQ,
			answer: []string{"allowed.example.test. 300 IN AAAA ::ffff:198.18.0.66"},
			want:   answer{},
		},
		{
			name:   "class CH record is ignored",
			answer: []string{"allowed.example.test. 300 CH A 198.18.0.66"},
			want:   answer{},
		},
		{
			name:   "TTL with the top bit set is 0 (RFC 2181 §8)",
			answer: []string{"allowed.example.test. 2147483648 IN A 203.0.113.10"},
			want:   answer{addrs: []ttlAddr{ta("203.0.113.10", 0)}},
		},
		{
			name:  "NXDOMAIN: SOA TTL or MINIMUM, the smaller (RFC 2308 §5)",
			rcode: dns.RcodeNameError,
			ns:    []string{soa},
			want:  answer{negTTL: 60, hasSOA: true},
		},
		{
			name:   "NXDOMAIN with an A record: nothing trusted",
			rcode:  dns.RcodeNameError,
			answer: []string{"allowed.example.test. 300 IN A 198.18.0.66"},
			ns:     []string{soa},
			want:   answer{negTTL: 60, hasSOA: true},
		},
		{
			name: "NODATA without SOA",
			want: answer{},
		},
		{
			name: "SOA of an unrelated zone is ignored",
			ns:   []string{"other.test. 600 IN SOA ns.other.test. host.other.test. 1 3600 600 86400 60"},
			want: answer{},
		},
		{
			name: "two SOAs: the smallest TTL",
			ns:   []string{soa, "test. 20 IN SOA ns.test. host.test. 1 3600 600 86400 900"},
			want: answer{negTTL: 20, hasSOA: true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.q
			if q.name == "" {
				q = testQ
			}
			got, err := readAnswer(q, mustPack(t, replyTo(t, q, tc.rcode, tc.answer, tc.ns)))
			if err != nil {
				t.Fatalf("readAnswer: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmpAnswer); diff != "" {
				t.Errorf("readAnswer (-want +got):\n%s", diff)
			}
		})
	}
}

// chainRRs is a CNAME chain of n links from testQ's name to an A record.
func chainRRs(n int) []string {
	rrs := []string{}
	owner := "allowed.example.test."
	for i := range n {
		target := string(rune('a'+i)) + ".chain.test."
		rrs = append(rrs, owner+" 300 IN CNAME "+target)
		owner = target
	}
	return append(rrs, owner+" 300 IN A 203.0.113.30")
}

// TestReadAnswerRefused covers answers that must be errors: never an
// address. Each case starts from a valid answer with one address and
// breaks one thing.
func TestReadAnswerRefused(t *testing.T) {
	good := []string{"allowed.example.test. 300 IN A 203.0.113.10"}
	tests := []struct {
		name   string
		answer []string
		edit   func(m *dns.Msg)
		raw    func(b []byte) []byte // applied after packing
		want   error
	}{
		{name: "wrong ID", edit: func(m *dns.Msg) { m.Id++ }, want: ErrMalformed},
		{name: "QR bit clear", edit: func(m *dns.Msg) { m.Response = false }, want: ErrMalformed},
		{name: "opcode NOTIFY", edit: func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }, want: ErrMalformed},
		{name: "other question name", edit: func(m *dns.Msg) { m.Question[0].Name = "allowed.example.test.attacker.test." }, want: ErrMalformed},
		{name: "other question type", edit: func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAAAA }, want: ErrMalformed},
		{name: "other question class", edit: func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }, want: ErrMalformed},
		{name: "no question", edit: func(m *dns.Msg) { m.Question = nil }, want: ErrMalformed},
		{name: "two questions", edit: func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }, want: ErrMalformed},
		{name: "TC bit", edit: func(m *dns.Msg) { m.Truncated = true }, want: ErrTruncated},
		{name: "SERVFAIL", edit: func(m *dns.Msg) { m.Rcode = dns.RcodeServerFailure }, want: ErrServFail},
		{name: "REFUSED", edit: func(m *dns.Msg) { m.Rcode = dns.RcodeRefused }, want: ErrRcode},
		{name: "FORMERR", edit: func(m *dns.Msg) { m.Rcode = dns.RcodeFormatError }, want: ErrRcode},
		{
			name:   "CNAME loop",
			answer: []string{"allowed.example.test. 300 IN CNAME a.loop.test.", "a.loop.test. 300 IN CNAME allowed.example.test.", "a.loop.test. 300 IN A 198.18.0.66"},
			want:   ErrMalformed,
		},
		{
			name:   "CNAME loop not through the question",
			answer: []string{"allowed.example.test. 300 IN CNAME a.loop.test.", "a.loop.test. 300 IN CNAME b.loop.test.", "b.loop.test. 300 IN CNAME A.loop.test."},
			want:   ErrMalformed,
		},
		{name: "CNAME to itself", answer: []string{"allowed.example.test. 300 IN CNAME allowed.example.test."}, want: ErrMalformed},
		{
			name:   "two CNAMEs for one owner (RFC 1034 §3.6.2)",
			answer: []string{"allowed.example.test. 300 IN CNAME a.cdn.test.", "allowed.example.test. 300 IN CNAME evil.test.", "evil.test. 300 IN A 198.18.0.66"},
			want:   ErrMalformed,
		},
		{name: "chain one link longer than maxChain", answer: chainRRs(maxChain + 1), want: ErrMalformed},
		{name: "shorter than a header", raw: func(b []byte) []byte { return b[:11] }, want: ErrMalformed},
		{name: "empty", raw: func([]byte) []byte { return nil }, want: ErrMalformed},
		{
			name: "header announces one more answer than there is",
			raw: func(b []byte) []byte {
				binary.BigEndian.PutUint16(b[6:], binary.BigEndian.Uint16(b[6:])+1)
				return b
			},
			want: ErrMalformed,
		},
		{
			name: "header announces one answer fewer than there is",
			raw: func(b []byte) []byte {
				binary.BigEndian.PutUint16(b[6:], binary.BigEndian.Uint16(b[6:])-1)
				return b
			},
			// The record left over is trailing bytes.
			want: ErrMalformed,
		},
		{
			name: "compression pointer loop in the answer owner",
			edit: func(m *dns.Msg) { m.Compress = true },
			raw: func(b []byte) []byte {
				// The answer's owner is a pointer to the question name at 12;
				// point it at itself instead.
				i := len(b) - 16
				if b[i] != 0xC0 {
					panic("fixture: no compression pointer where expected")
				}
				binary.BigEndian.PutUint16(b[i:], 0xC000|uint16(i))
				return b
			},
			want: ErrMalformed,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			answer := tc.answer
			if answer == nil {
				answer = good
			}
			m := replyTo(t, testQ, dns.RcodeSuccess, answer, nil)
			if tc.edit != nil {
				tc.edit(m)
			}
			b := mustPack(t, m)
			if tc.raw != nil {
				b = tc.raw(b)
			}
			got, err := readAnswer(testQ, b)
			if !errors.Is(err, tc.want) {
				t.Fatalf("readAnswer error = %v, want %v", err, tc.want)
			}
			if len(got.addrs) != 0 {
				t.Errorf("readAnswer returned addresses %v with an error", got.addrs)
			}
		})
	}
}

// TestReadAnswerPrefixes: no strict prefix of a valid answer is accepted
// (a UDP datagram cut short, a TCP stream that ended early).
func TestReadAnswerPrefixes(t *testing.T) {
	m := replyTo(t, testQ, dns.RcodeSuccess, []string{
		"allowed.example.test. 300 IN CNAME a.cdn.test.",
		"a.cdn.test. 300 IN A 203.0.113.20",
		"a.cdn.test. 300 IN A 203.0.113.21",
	}, []string{"test. 20 IN SOA ns.test. host.test. 1 3600 600 86400 900"})
	m.SetEdns0(ednsSize, false)
	b := mustPack(t, m)
	if _, err := readAnswer(testQ, b); err != nil {
		t.Fatalf("the whole answer: %v", err)
	}
	for n := range len(b) {
		got, err := readAnswer(testQ, b[:n])
		if err == nil {
			t.Errorf("prefix of %d/%d bytes accepted: %+v", n, len(b), got)
		}
	}
}
