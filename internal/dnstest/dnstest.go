// Package dnstest is a DNS server for tests: a small recursive-resolver
// stand-in whose zone, failures and answer rotation the test changes while
// it runs, and which counts the queries it gets.
//
// It answers over sockets the caller opens (Start), so a lab test can open
// them inside a network namespace, and in memory (Exchange, which makes a
// Server a resolve.Transport). Both paths go through ServeDNS.
//
// SetFlip makes a name's answer change within its TTL, per query or per
// period of the server's clock (SetClock), as a fleet of resolvers whose
// caches disagree, or a load balancer that moves a name, looks to a
// client that asks twice.
//
// Answers look like a recursive resolver's: CNAME chains in the zone are
// followed and put in the answer section; an unknown name is NXDOMAIN and a
// name without records of the asked type is NODATA, both with an SOA (owner
// ".") whose TTL and MINIMUM are the negative TTL. It is for tests only:
// no zone transfers, no DNSSEC, no EDNS options beyond the buffer size.
package dnstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// maxHops bounds the CNAME chain ServeDNS follows; past it the answer is
// SERVFAIL, as a resolver gives for a CNAME loop.
const maxHops = 16

type record struct {
	ttl   uint32
	addrs [2][]netip.Addr // [0] IPv4 (A), [1] IPv6 (AAAA)
	cname string          // target, normalised; when set, addrs are empty
	next  [2]int          // rotation offset per family; flips per query: queries so far
	// flip: one address of the family at a time (SetFlip), the next one
	// after every query (period 0) or every period since epoch.
	flip   bool
	period time.Duration
	epoch  time.Time
	// served counts the A and AAAA queries for the record's own name
	// answered from it (Served).
	served [2]int
}

// Server is a test DNS server. Its zero value is not usable; call New.
// Its methods are safe for concurrent use.
type Server struct {
	mu       sync.Mutex
	names    map[string]*record
	servFail bool
	drop     bool
	truncUDP bool
	rotate   int
	negTTL   uint32
	now      func() time.Time
	queries  map[query]int
	total    int

	servers []*dns.Server
	wg      sync.WaitGroup
}

type query struct {
	name  string
	qtype uint16
}

// New returns a Server with an empty zone and a negative TTL of 5 seconds.
func New() *Server {
	return &Server{names: make(map[string]*record), queries: make(map[query]int), negTTL: 5, now: time.Now}
}

// SetClock sets the clock that flip periods (SetFlip) are read on, so that
// a test on a fake clock decides when a name flips. nil: time.Now. Set it
// before SetFlip, which reads it.
func (s *Server) SetClock(now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// norm lowercases a name and drops its trailing dot.
func norm(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

// SetAddrs makes name answer addrs (IPv4 as A, IPv6 as AAAA) with ttl,
// replacing whatever name had (a CNAME included). No addrs: the name
// exists with no records (NODATA).
func (s *Server) SetAddrs(name string, ttl uint32, addrs ...netip.Addr) {
	r := newRecord(ttl, addrs)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.names[norm(name)] = r
}

// newRecord sorts addrs by family into a record with ttl.
func newRecord(ttl uint32, addrs []netip.Addr) *record {
	r := &record{ttl: ttl}
	for _, a := range addrs {
		a = a.Unmap()
		f := 0
		if a.Is6() {
			f = 1
		}
		r.addrs[f] = append(r.addrs[f], a)
	}
	return r
}

// SetFlip makes name answer one address of each family at a time, taken
// from addrs in turn, with ttl, replacing whatever name had. With period 0
// the answer for a type moves to the next address after every answer of
// that type (so each query sees what the one before did not); with
// a period, it moves every period of the server's clock (SetClock) from
// this call on, whoever asks. The first answer is the first address of
// its family. The TTL is not shortened: a flip within the TTL is the
// point. SetRotate does not apply to a flipping name.
func (s *Server) SetFlip(name string, ttl uint32, period time.Duration, addrs ...netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := newRecord(ttl, addrs)
	r.flip, r.period, r.epoch = true, period, s.now()
	s.names[norm(name)] = r
}

// SetCNAME makes name an alias of target with ttl, replacing whatever name
// had.
func (s *Server) SetCNAME(name, target string, ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.names[norm(name)] = &record{ttl: ttl, cname: norm(target)}
}

// Remove deletes name: it answers NXDOMAIN from now on.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.names, norm(name))
}

// SetServFail makes every answer SERVFAIL while on.
func (s *Server) SetServFail(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.servFail = on
}

// SetDrop makes the server count queries but never answer while on, as an
// unreachable or overloaded resolver (the client times out).
func (s *Server) SetDrop(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop = on
}

// SetTruncateUDP makes every answer over UDP an empty one with the TC bit,
// so the client must ask again over TCP, while on.
func (s *Server) SetTruncateUDP(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.truncUDP = on
}

// SetRotate makes each answer carry only n of a name's addresses of the
// asked type, starting one further along the list for every query, as a
// resolver in front of a large round-robin set does. 0: all, in order.
func (s *Server) SetRotate(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rotate = n
}

// SetNegativeTTL sets the TTL and MINIMUM of the SOA sent with NXDOMAIN and
// NODATA answers.
func (s *Server) SetNegativeTTL(ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.negTTL = ttl
}

// Queries returns how many queries for name and qtype (dns.TypeA, ...)
// the server has received, answered or not.
func (s *Server) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[query{norm(name), qtype}]
}

// Served returns how many queries for name and qtype (dns.TypeA or
// dns.TypeAAAA) were answered from name's records as they were last set
// (SetAddrs, SetFlip, SetCNAME): 0 for a name without records, or whose
// records were set again since. Queries that got SERVFAIL, no answer or a
// truncated one do not count; Lookups do. A test that sets a name's
// records while a client may be asking (egressd at its start) can wait
// for the first query the new records answered.
func (s *Server) Served(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.names[norm(name)]
	f, ok := famOf(qtype)
	if r == nil || !ok {
		return 0
	}
	return r.served[f]
}

// famOf is the index into record.addrs of qtype's addresses.
func famOf(qtype uint16) (int, bool) {
	switch qtype {
	case dns.TypeA:
		return 0, true
	case dns.TypeAAAA:
		return 1, true
	}
	return 0, false
}

// Total returns how many queries the server has received.
func (s *Server) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m, ok := s.answer(req, isUDP(w.RemoteAddr()))
	if !ok {
		return
	}
	_ = w.WriteMsg(m)
}

func isUDP(a net.Addr) bool {
	_, ok := a.(*net.UDPAddr)
	return ok
}

// answer builds the reply to req; ok is false when the server stays silent.
func (s *Server) answer(req *dns.Msg, udp bool) (m *dns.Msg, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m = new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m, true
	}
	q := req.Question[0]
	s.total++
	s.queries[query{norm(q.Name), q.Qtype}]++
	switch {
	case s.drop:
		return nil, false
	case s.servFail:
		m.Rcode = dns.RcodeServerFailure
		return m, true
	case udp && s.truncUDP:
		m.Truncated = true
		return m, true
	}

	name := norm(q.Name)
	for hop := range maxHops {
		r := s.names[name]
		if r == nil {
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{s.soa()}
			return m, true
		}
		if f, ok := famOf(q.Qtype); ok && hop == 0 {
			r.served[f]++
		}
		if r.cname != "" {
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(name, dns.TypeCNAME, r.ttl), Target: dns.Fqdn(r.cname)})
			name = r.cname
			continue
		}
		for _, a := range s.pick(r, q.Qtype) {
			if a.Is4() {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(name, dns.TypeA, r.ttl), A: a.AsSlice()})
			} else {
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(name, dns.TypeAAAA, r.ttl), AAAA: a.AsSlice()})
			}
		}
		if len(m.Answer) == 0 || m.Answer[len(m.Answer)-1].Header().Rrtype == dns.TypeCNAME {
			m.Ns = []dns.RR{s.soa()} // NODATA
		}
		return m, true
	}
	m.Answer = nil
	m.Rcode = dns.RcodeServerFailure
	return m, true
}

// pick returns the addresses of r that answer qtype, rotated or flipped
// when asked.
// The caller holds mu.
func (s *Server) pick(r *record, qtype uint16) []netip.Addr {
	f, ok := famOf(qtype)
	if !ok {
		return nil
	}
	all := r.addrs[f]
	if r.flip && len(all) > 0 {
		i := r.next[f]
		if r.period > 0 {
			i = int(max(s.now().Sub(r.epoch), 0) / r.period)
		} else {
			r.next[f]++
		}
		return all[i%len(all) : i%len(all)+1]
	}
	if s.rotate <= 0 || s.rotate >= len(all) {
		return all
	}
	out := make([]netip.Addr, 0, s.rotate)
	for i := range s.rotate {
		out = append(out, all[(r.next[f]+i)%len(all)])
	}
	r.next[f] = (r.next[f] + 1) % len(all)
	return out
}

func (s *Server) soa() *dns.SOA {
	return &dns.SOA{
		Hdr: hdr(".", dns.TypeSOA, s.negTTL),
		Ns:  "ns.test.", Mbox: "hostmaster.test.",
		Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: s.negTTL,
	}
}

func hdr(name string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: dns.Fqdn(name), Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}

// Lookup asks the server for name's qtype records in memory, as a client
// resolving the name before it connects would: the query counts and
// moves a flipping name like any other. It returns the addresses of the
// answer, or an error when the server stays silent (SetDrop) or answers
// with an rcode other than NOERROR.
func (s *Server) Lookup(name string, qtype uint16) ([]netip.Addr, error) {
	req := new(dns.Msg)
	req.SetQuestion(dns.Fqdn(name), qtype)
	m, ok := s.answer(req, false)
	switch {
	case !ok:
		return nil, fmt.Errorf("dnstest: %s: no answer", name)
	case m.Rcode != dns.RcodeSuccess:
		return nil, fmt.Errorf("dnstest: %s: %s", name, dns.RcodeToString[m.Rcode])
	}
	var out []netip.Addr
	for _, rr := range m.Answer {
		var ip net.IP
		switch rr := rr.(type) {
		case *dns.A:
			ip = rr.A
		case *dns.AAAA:
			ip = rr.AAAA
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}

// Exchange answers a packed query in memory, as a TCP server would (never
// truncated). When the server drops queries it blocks until ctx ends. It
// makes a Server a resolve.Transport; server is ignored.
func (s *Server) Exchange(ctx context.Context, _ string, q []byte) ([]byte, error) {
	req := new(dns.Msg)
	if err := req.Unpack(q); err != nil {
		return nil, fmt.Errorf("dnstest: unpack query: %w", err)
	}
	m, ok := s.answer(req, false)
	if !ok {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return m.Pack()
}

// Start serves DNS on pc (UDP) and l (TCP) until Close; either may be nil,
// not both. The caller opens them, inside whatever network namespace the
// test needs. Start returns once both are serving.
func (s *Server) Start(pc net.PacketConn, l net.Listener) error {
	if pc == nil && l == nil {
		return errors.New("dnstest: Start needs a PacketConn or a Listener")
	}
	var srvs []*dns.Server
	if pc != nil {
		srvs = append(srvs, &dns.Server{PacketConn: pc, Handler: s})
	}
	if l != nil {
		srvs = append(srvs, &dns.Server{Listener: l, Handler: s})
	}
	for _, srv := range srvs {
		started := make(chan struct{})
		failed := make(chan error, 1)
		srv.NotifyStartedFunc = func() { close(started) }
		s.wg.Go(func() { failed <- srv.ActivateAndServe() })
		select {
		case <-started:
			s.mu.Lock()
			s.servers = append(s.servers, srv)
			s.mu.Unlock()
		case err := <-failed:
			return errors.Join(fmt.Errorf("dnstest: serve: %w", err), s.Close())
		}
	}
	return nil
}

// Close stops the servers Start started, closing the PacketConn and the
// Listener given to Start, and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	srvs := s.servers
	s.servers = nil
	s.mu.Unlock()
	var errs []error
	for _, srv := range srvs {
		errs = append(errs, srv.Shutdown())
	}
	s.wg.Wait()
	return errors.Join(errs...)
}
