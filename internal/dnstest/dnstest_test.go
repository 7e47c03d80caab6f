package dnstest

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
)

// ask sends one query through Exchange and returns the reply in short
// form: rcode, then each answer record, then "SOA" if the authority
// section has one.
func ask(t *testing.T, s *Server, name string, qtype uint16) []string {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.Exchange(context.Background(), "", b)
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(resp); err != nil {
		t.Fatalf("unpack reply: %v", err)
	}
	if m.Id != q.Id || !m.Response {
		t.Fatalf("reply ID %d, QR %t; want ID %d, QR set", m.Id, m.Response, q.Id)
	}
	out := []string{dns.RcodeToString[m.Rcode]}
	for _, rr := range m.Answer {
		out = append(out, rr.String())
	}
	for _, rr := range m.Ns {
		if _, ok := rr.(*dns.SOA); ok {
			out = append(out, "SOA")
		}
	}
	return out
}

func TestAnswers(t *testing.T) {
	a := netip.MustParseAddr
	zone := func(s *Server) {
		s.SetAddrs("www.example.test", 60, a("203.0.113.1"), a("203.0.113.2"), a("2001:db8::1"))
		s.SetCNAME("alias.example.test", "www.example.test", 30)
		s.SetCNAME("dangling.example.test", "gone.example.test", 30)
		s.SetCNAME("loop1.example.test", "loop2.example.test", 30)
		s.SetCNAME("loop2.example.test", "loop1.example.test", 30)
		s.SetAddrs("empty.example.test", 60)
	}
	tests := []struct {
		name  string
		edit  func(*Server)
		qname string
		qtype uint16
		want  []string
	}{
		{name: "A", qname: "www.example.test", qtype: dns.TypeA, want: []string{
			"NOERROR", "www.example.test.\t60\tIN\tA\t203.0.113.1", "www.example.test.\t60\tIN\tA\t203.0.113.2"}},
		{name: "AAAA", qname: "WWW.example.test.", qtype: dns.TypeAAAA, want: []string{
			"NOERROR", "www.example.test.\t60\tIN\tAAAA\t2001:db8::1"}},
		{name: "CNAME followed", qname: "alias.example.test", qtype: dns.TypeA, want: []string{
			"NOERROR", "alias.example.test.\t30\tIN\tCNAME\twww.example.test.",
			"www.example.test.\t60\tIN\tA\t203.0.113.1", "www.example.test.\t60\tIN\tA\t203.0.113.2"}},
		{name: "CNAME to nothing: NXDOMAIN", qname: "dangling.example.test", qtype: dns.TypeA, want: []string{
			"NXDOMAIN", "dangling.example.test.\t30\tIN\tCNAME\tgone.example.test.", "SOA"}},
		{name: "CNAME loop: SERVFAIL", qname: "loop1.example.test", qtype: dns.TypeA, want: []string{"SERVFAIL"}},
		{name: "unknown name: NXDOMAIN", qname: "nope.example.test", qtype: dns.TypeA, want: []string{"NXDOMAIN", "SOA"}},
		{name: "no records: NODATA", qname: "empty.example.test", qtype: dns.TypeA, want: []string{"NOERROR", "SOA"}},
		{name: "no record of the type: NODATA", qname: "www.example.test", qtype: dns.TypeMX, want: []string{"NOERROR", "SOA"}},
		{name: "removed", edit: func(s *Server) { s.Remove("www.example.test") }, qname: "www.example.test", qtype: dns.TypeA, want: []string{"NXDOMAIN", "SOA"}},
		{name: "replaced", edit: func(s *Server) { s.SetAddrs("www.example.test", 5, a("203.0.113.9")) }, qname: "alias.example.test", qtype: dns.TypeA, want: []string{
			"NOERROR", "alias.example.test.\t30\tIN\tCNAME\twww.example.test.", "www.example.test.\t5\tIN\tA\t203.0.113.9"}},
		{name: "SERVFAIL switch", edit: func(s *Server) { s.SetServFail(true) }, qname: "www.example.test", qtype: dns.TypeA, want: []string{"SERVFAIL"}},
		{name: "TC only over UDP", edit: func(s *Server) { s.SetTruncateUDP(true) }, qname: "www.example.test", qtype: dns.TypeAAAA, want: []string{
			"NOERROR", "www.example.test.\t60\tIN\tAAAA\t2001:db8::1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New()
			zone(s)
			if tc.edit != nil {
				tc.edit(s)
			}
			if diff := cmp.Diff(tc.want, ask(t, s, tc.qname, tc.qtype)); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
			if got := s.Queries(tc.qname, tc.qtype); got != 1 {
				t.Errorf("Queries(%s) = %d, want 1", tc.qname, got)
			}
		})
	}
}

func TestRotate(t *testing.T) {
	s := New()
	s.SetAddrs("rr.example.test", 60, netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2"), netip.MustParseAddr("203.0.113.3"))
	s.SetRotate(2)
	var got [][]string
	for range 4 {
		got = append(got, ask(t, s, "rr.example.test", dns.TypeA)[1:])
	}
	rr := func(last string) string { return "rr.example.test.\t60\tIN\tA\t203.0.113." + last }
	want := [][]string{{rr("1"), rr("2")}, {rr("2"), rr("3")}, {rr("3"), rr("1")}, {rr("1"), rr("2")}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rotated answers (-want +got):\n%s", diff)
	}
	if n := s.Total(); n != 4 {
		t.Errorf("Total = %d, want 4", n)
	}
}

func TestDrop(t *testing.T) {
	s := New()
	s.SetDrop(true)
	q := new(dns.Msg)
	q.SetQuestion("www.example.test.", dns.TypeA)
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.Exchange(ctx, "", b); err != context.DeadlineExceeded {
		t.Errorf("Exchange while dropping: %v, want context.DeadlineExceeded", err)
	}
	if n := s.Queries("www.example.test", dns.TypeA); n != 1 {
		t.Errorf("dropped query not counted: %d", n)
	}
}

func TestStartNeedsASocket(t *testing.T) {
	if err := New().Start(nil, nil); err == nil {
		t.Error("Start(nil, nil) = nil, want an error")
	}
}

// TestFlip: a flipping name answers one address at a time, the next one
// per query of its type, or per period of the server's clock.
func TestFlip(t *testing.T) {
	a := netip.MustParseAddr
	const name = "flip.example.test"
	rr := func(addr string) []string {
		typ := "A"
		if a(addr).Is6() {
			typ = "AAAA"
		}
		return []string{"NOERROR", name + ".\t30\tIN\t" + typ + "\t" + addr}
	}
	// One query: advance the clock, then ask.
	type ask1 struct {
		advance time.Duration
		qtype   uint16
		want    string
	}
	tests := []struct {
		name   string
		period time.Duration
		addrs  []string
		asks   []ask1
	}{
		{
			name: "per query, each type on its own", addrs: []string{"203.0.113.1", "203.0.113.2", "2001:db8::1", "2001:db8::2"},
			asks: []ask1{
				{qtype: dns.TypeA, want: "203.0.113.1"},
				{qtype: dns.TypeA, want: "203.0.113.2"},
				{qtype: dns.TypeAAAA, want: "2001:db8::1"},
				{qtype: dns.TypeA, want: "203.0.113.1"},
				{advance: time.Hour, qtype: dns.TypeA, want: "203.0.113.2"}, // time does not matter
				{qtype: dns.TypeAAAA, want: "2001:db8::2"},
			},
		},
		{
			name: "per period, at its boundaries", period: 10 * time.Second, addrs: []string{"203.0.113.1", "203.0.113.2", "203.0.113.3"},
			asks: []ask1{
				{qtype: dns.TypeA, want: "203.0.113.1"},
				{qtype: dns.TypeA, want: "203.0.113.1"}, // queries do not matter
				{advance: 10*time.Second - time.Nanosecond, qtype: dns.TypeA, want: "203.0.113.1"},
				{advance: time.Nanosecond, qtype: dns.TypeA, want: "203.0.113.2"},
				{advance: 10 * time.Second, qtype: dns.TypeA, want: "203.0.113.3"},
				{advance: 10 * time.Second, qtype: dns.TypeA, want: "203.0.113.1"},
				{advance: 25 * time.Second, qtype: dns.TypeA, want: "203.0.113.3"},
			},
		},
		{
			name: "one address: never flips", addrs: []string{"203.0.113.1"},
			asks: []ask1{{qtype: dns.TypeA, want: "203.0.113.1"}, {qtype: dns.TypeA, want: "203.0.113.1"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New()
			now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
			s.SetClock(func() time.Time { return now })
			var as []netip.Addr
			for _, x := range tc.addrs {
				as = append(as, a(x))
			}
			s.SetRotate(2) // ignored for a flipping name
			s.SetFlip(name, 30, tc.period, as...)
			for i, q := range tc.asks {
				now = now.Add(q.advance)
				if diff := cmp.Diff(rr(q.want), ask(t, s, name, q.qtype)); diff != "" {
					t.Errorf("query %d: reply (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

// TestFlipCNAME: a CNAME to a flipping name flips with it, and a flipping
// name without addresses of a type is NODATA for it.
func TestFlipCNAME(t *testing.T) {
	s := New()
	s.SetFlip("flip.example.test", 30, 0, netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2"))
	s.SetCNAME("alias.example.test", "flip.example.test", 60)
	want := [][]string{
		{"NOERROR", "alias.example.test.\t60\tIN\tCNAME\tflip.example.test.", "flip.example.test.\t30\tIN\tA\t203.0.113.1"},
		{"NOERROR", "flip.example.test.\t30\tIN\tA\t203.0.113.2"},
		{"NOERROR", "alias.example.test.\t60\tIN\tCNAME\tflip.example.test.", "flip.example.test.\t30\tIN\tA\t203.0.113.1"},
	}
	got := [][]string{
		ask(t, s, "alias.example.test", dns.TypeA),
		ask(t, s, "flip.example.test", dns.TypeA),
		ask(t, s, "alias.example.test", dns.TypeA),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"NOERROR", "SOA"}, ask(t, s, "flip.example.test", dns.TypeAAAA)); diff != "" {
		t.Errorf("AAAA of an IPv4-only flipping name (-want +got):\n%s", diff)
	}
}

func TestLookup(t *testing.T) {
	a := netip.MustParseAddr
	s := New()
	s.SetAddrs("www.example.test", 60, a("203.0.113.1"), a("2001:db8::1"))
	s.SetCNAME("alias.example.test", "www.example.test", 30)
	s.SetFlip("flip.example.test", 30, 0, a("203.0.113.1"), a("203.0.113.2"))
	tests := []struct {
		name    string
		edit    func(*Server)
		qname   string
		qtype   uint16
		want    []netip.Addr
		wantErr string
	}{
		{name: "A", qname: "www.example.test", qtype: dns.TypeA, want: []netip.Addr{a("203.0.113.1")}},
		{name: "AAAA through a CNAME", qname: "alias.example.test", qtype: dns.TypeAAAA, want: []netip.Addr{a("2001:db8::1")}},
		{name: "flips like any query", qname: "flip.example.test", qtype: dns.TypeA, want: []netip.Addr{a("203.0.113.2")}},
		{name: "NODATA", qname: "www.example.test", qtype: dns.TypeMX},
		{name: "NXDOMAIN", qname: "nope.example.test", qtype: dns.TypeA, wantErr: "NXDOMAIN"},
		{name: "silent", edit: func(s *Server) { s.SetDrop(true) }, qname: "www.example.test", qtype: dns.TypeA, wantErr: "no answer"},
	}
	if _, err := s.Lookup("flip.example.test", dns.TypeA); err != nil { // the flip's first answer
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.edit != nil {
				tc.edit(s)
			}
			got, err := s.Lookup(tc.qname, tc.qtype)
			switch {
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Lookup error = %v, want one containing %q", err, tc.wantErr)
			case tc.wantErr == "" && err != nil:
				t.Errorf("Lookup: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
				t.Errorf("Lookup (-want +got):\n%s", diff)
			}
		})
	}
	if n := s.Queries("www.example.test", dns.TypeA); n != 2 {
		t.Errorf("Queries = %d, want 2 (Lookups count)", n)
	}
}

// TestServed: Served counts the A and AAAA queries that a name's records,
// as last set, answered, and starts again when they are set again.
func TestServed(t *testing.T) {
	a := netip.MustParseAddr
	s := New()
	s.SetCNAME("alias.example.test", "www.example.test", 30)
	steps := []struct {
		name        string
		do          func()
		a, aaaa, mx int // Served for www.example.test after do
		alias       int // Served for alias.example.test, A
	}{
		{name: "no records: NXDOMAIN", do: func() { ask(t, s, "www.example.test", dns.TypeA) }},
		{name: "set", do: func() { s.SetAddrs("www.example.test", 60, a("203.0.113.1")) }},
		{name: "A", do: func() { ask(t, s, "www.example.test", dns.TypeA) }, a: 1},
		{name: "AAAA, NODATA", do: func() { ask(t, s, "www.example.test", dns.TypeAAAA) }, a: 1, aaaa: 1},
		{name: "a Lookup", do: func() { _, _ = s.Lookup("www.example.test", dns.TypeA) }, a: 2, aaaa: 1},
		{name: "MX is not counted", do: func() { ask(t, s, "www.example.test", dns.TypeMX) }, a: 2, aaaa: 1},
		{name: "through the alias: its own", do: func() { ask(t, s, "alias.example.test", dns.TypeA) }, a: 2, aaaa: 1, alias: 1},
		{name: "SERVFAIL is not", do: func() { s.SetServFail(true); _, _ = s.Lookup("www.example.test", dns.TypeA); s.SetServFail(false) }, a: 2, aaaa: 1, alias: 1},
		{name: "set again", do: func() { s.SetFlip("www.example.test", 60, 0, a("203.0.113.1"), a("203.0.113.2")) }, alias: 1},
		{name: "A after the flip", do: func() { ask(t, s, "www.example.test", dns.TypeA) }, a: 1, alias: 1},
	}
	for _, st := range steps {
		st.do()
		got := [4]int{s.Served("www.example.test", dns.TypeA), s.Served("www.example.test", dns.TypeAAAA),
			s.Served("www.example.test", dns.TypeMX), s.Served("alias.example.test", dns.TypeA)}
		if want := [4]int{st.a, st.aaaa, st.mx, st.alias}; got != want {
			t.Errorf("%s: Served A, AAAA, MX, alias A = %v, want %v", st.name, got, want)
		}
	}
}
