package resolve

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// FuzzReadAnswer feeds arbitrary bytes to the answer handling, as if a
// server (or an off-path attacker) sent them in reply to a query for
// allowed.example.test. The query ID is taken from the input's first two
// bytes, so the fuzzer gets past the ID check.
//
// Properties: no panic; an error never comes with addresses; and every
// address returned is an A (AAAA) record of class IN whose owner is
// reachable from the question through the CNAME records of the answer
// section, in a message that answers the question (a looser reference
// than readAnswer's, computed here independently), with rcode NOERROR and
// no TC bit.
func FuzzReadAnswer(f *testing.F) {
	seed := func(qtype uint16, rcode int, answer, ns []string, edit func(*dns.Msg)) []byte {
		q := question{id: 0xbeef, name: testQ.name, qtype: qtype}
		m := replyTo(f, q, rcode, answer, ns)
		m.Compress = true
		if edit != nil {
			edit(m)
		}
		return mustPack(f, m)
	}
	const soa = "example.test. 60 IN SOA ns.example.test. host.example.test. 1 3600 600 86400 30"
	// Two A records for the question.
	f.Add(seed(dns.TypeA, 0, []string{"allowed.example.test. 300 IN A 203.0.113.10", "allowed.example.test. 300 IN A 203.0.113.11"}, nil, nil), false)
	// A CNAME chain of two links to an A record.
	f.Add(seed(dns.TypeA, 0, []string{"allowed.example.test. 300 IN CNAME a.cdn.test.", "a.cdn.test. 60 IN CNAME b.cdn.test.", "b.cdn.test. 30 IN A 203.0.113.20"}, nil, nil), false)
	// An unrelated owner next to the real answer.
	f.Add(seed(dns.TypeA, 0, []string{"allowed.example.test. 300 IN A 203.0.113.10", "attacker.test. 300 IN A 198.18.0.66"}, nil, nil), false)
	// AAAA answer with a CNAME.
	f.Add(seed(dns.TypeAAAA, 0, []string{"allowed.example.test. 300 IN CNAME v6.cdn.test.", "v6.cdn.test. 300 IN AAAA 2001:db8::1"}, nil, nil), true)
	// NXDOMAIN with an SOA.
	f.Add(seed(dns.TypeA, dns.RcodeNameError, nil, []string{soa}, nil), false)
	// NODATA with an SOA, with EDNS0.
	f.Add(seed(dns.TypeA, 0, nil, []string{soa}, func(m *dns.Msg) { m.SetEdns0(ednsSize, false) }), false)
	// A CNAME loop.
	f.Add(seed(dns.TypeA, 0, []string{"allowed.example.test. 300 IN CNAME a.loop.test.", "a.loop.test. 300 IN CNAME allowed.example.test."}, nil, nil), false)
	// Forked CNAMEs.
	f.Add(seed(dns.TypeA, 0, []string{"allowed.example.test. 300 IN CNAME a.test.", "allowed.example.test. 300 IN CNAME b.test.", "b.test. 300 IN A 198.18.0.66"}, nil, nil), false)
	// TC bit with an answer.
	f.Add(seed(dns.TypeA, 0, []string{"allowed.example.test. 300 IN A 203.0.113.10"}, nil, func(m *dns.Msg) { m.Truncated = true }), false)
	// SERVFAIL.
	f.Add(seed(dns.TypeA, dns.RcodeServerFailure, nil, nil, nil), false)
	// Not DNS; a bare header; nothing.
	f.Add([]byte("\xbe\xefHTTP/1.1 200 OK\r\n\r\n"), false)
	f.Add([]byte("\xbe\xef\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"), false)
	f.Add([]byte{}, false)

	f.Fuzz(func(t *testing.T, resp []byte, aaaa bool) {
		q := question{name: testQ.name, qtype: dns.TypeA}
		if aaaa {
			q.qtype = dns.TypeAAAA
		}
		if len(resp) >= 2 {
			q.id = binary.BigEndian.Uint16(resp)
		}
		got, err := readAnswer(q, resp)
		if err != nil {
			if len(got.addrs) != 0 {
				t.Fatalf("error %v with addresses %v", err, got.addrs)
			}
			return
		}
		if len(got.addrs) == 0 {
			return
		}
		allowedAddrs, ok := referenceAddrs(resp, q)
		if !ok {
			t.Fatalf("addresses %v from a message that does not answer the question", got.addrs)
		}
		for _, a := range got.addrs {
			if !allowedAddrs[a.addr] {
				t.Fatalf("address %v is not a %s record on the question's CNAME chain (allowed: %v)", a.addr, dns.TypeToString[q.qtype], allowedAddrs)
			}
		}
	})
}

// referenceAddrs is the fuzz oracle: every q.qtype address of class IN
// owned by a name reachable from q.name through any CNAME records of the
// answer section (in up to maxChain links), if resp unpacks as a NOERROR,
// non-truncated response to q. ok is false otherwise.
func referenceAddrs(resp []byte, q question) (map[netip.Addr]bool, bool) {
	var m dns.Msg
	if m.Unpack(resp) != nil || m.Id != q.id || !m.Response || m.Truncated || m.Rcode != dns.RcodeSuccess ||
		len(m.Question) != 1 || !strings.EqualFold(m.Question[0].Name, q.name) || m.Question[0].Qtype != q.qtype {
		return nil, false
	}
	reach := map[string]bool{strings.ToLower(q.name): true}
	for range maxChain {
		for _, rr := range m.Answer {
			if c, ok := rr.(*dns.CNAME); ok && reach[strings.ToLower(c.Hdr.Name)] {
				reach[strings.ToLower(c.Target)] = true
			}
		}
	}
	out := map[netip.Addr]bool{}
	for _, rr := range m.Answer {
		h := rr.Header()
		if h.Class != dns.ClassINET || h.Rrtype != q.qtype || !reach[strings.ToLower(h.Name)] {
			continue
		}
		var ip []byte
		switch r := rr.(type) {
		case *dns.A:
			ip = r.A
		case *dns.AAAA:
			ip = r.AAAA
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			out[a.Unmap()] = true
		}
	}
	return out, true
}

// FuzzCache runs a sequence of merges (an answer of one address, or a
// negative one for its family), clock steps and lookups, three bytes
// each, against a model of the cache: every address valid until the
// latest expiry any answer gave it, fresh until then and in grace for
// grace after (no name or address limit is reached); a family negative
// until its negative answer's expiry, unless an answer with an address
// came after it.
//
// Properties: cached and look agree with the model on the address's
// standing, the addresses held and whether its family has a fresh one;
// look agrees on when the family's last answer was asked, whether it was
// negative (what decides a second look, see Resolver.secondLook), and
// whether that negative answer is fresh.
func FuzzCache(f *testing.F) {
	// An answer, its TTL's end, its grace's end, another answer.
	f.Add([]byte{1, 0, 0x14, 2, 0, 0, 0, 20, 0, 2, 0, 0, 0, 100, 0, 2, 0, 0, 1, 1, 0x08})
	// Two names, four addresses, IPv6 among them.
	f.Add([]byte{1, 0, 0x41, 1, 5, 0x42, 1, 6, 0x43, 2, 5, 1, 2, 6, 2, 0, 3, 0, 2, 6, 3})
	// An answer, a negative one for its family (0x80: 192.0.2.0's), its
	// end, an IPv6 one, and the answer again, which ends the negative.
	f.Add([]byte{1, 0, 0x14, 0, 1, 0, 1, 0x80, 0x0c, 2, 0, 0, 0, 4, 0, 2, 0, 0, 1, 6, 0x08, 2, 0, 0, 1, 0, 0x10, 2, 0, 0})
	f.Add([]byte{})
	const grace = 60
	sec := int64(time.Second)
	f.Fuzz(func(t *testing.T, ops []byte) {
		c := newCache(16, 64, grace*time.Second)
		names := [4]string{"a.test", "b.test", "c.test", "d.test"}
		addr := func(i byte) netip.Addr {
			if i%8 >= 6 {
				return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: i % 8})
			}
			return netip.AddrFrom4([4]byte{192, 0, 2, i % 8})
		}
		model := map[string]map[netip.Addr]int64{}
		// Per name and family: whether it has had an answer, when the
		// last was asked, and, if it was negative, when that ends (0:
		// positive).
		type famModel struct {
			merged        bool
			asked, negExp int64
		}
		fams := map[string]*[2]famModel{}
		var now int64
		standing := func(exp int64) Cached { // of an address the model holds
			switch {
			case exp > now:
				return CachedFresh
			case exp > now-grace*sec:
				return CachedGrace
			}
			return CachedNone
		}
		for len(ops) >= 3 {
			op, a, b := ops[0], ops[1], ops[2]
			ops = ops[3:]
			name := names[b%4]
			switch op % 3 {
			case 0:
				now += int64(a) * sec
			case 1:
				x := addr(a)
				exp := now + int64(b>>2)*sec + sec
				if fams[name] == nil {
					fams[name] = &[2]famModel{}
				}
				fm := &fams[name][family(x)]
				fm.merged, fm.asked, fm.negExp = true, now, 0
				if a >= 0x80 { // a negative answer for x's family
					fm.negExp = exp
					c.merge(name, family(x), nil, exp, now, now, false)
					break
				}
				if model[name] == nil {
					model[name] = map[netip.Addr]int64{}
				}
				model[name][x] = max(model[name][x], exp)
				c.merge(name, family(x), []cachedAddr{{addr: x, exp: exp}}, 0, now, now, false)
			case 2:
				x := addr(a)
				want := CachedNone
				if exp, ok := model[name][x]; ok {
					want = standing(exp)
				}
				if got := c.cached(name, x, now); got != want {
					t.Fatalf("t=%d: cached(%s, %v) = %v, want %v", now, name, x, got, want)
				}
				held, famFresh := 0, false
				for y, exp := range model[name] {
					if standing(exp) != CachedNone {
						held++
					}
					famFresh = famFresh || standing(exp) == CachedFresh && family(y) == family(x)
				}
				v := c.look(name, x, now, true)
				if v.cached != want || v.held != held || v.famFresh != famFresh {
					t.Fatalf("t=%d: look(%s, %v) = %+v, want standing %v, %d held, fresh in its family %t",
						now, name, x, v, want, held, famFresh)
				}
				var fm famModel
				if fams[name] != nil {
					fm = fams[name][family(x)]
				}
				answered, negative, negFresh := int64(noAnswer), fm.negExp != 0, fm.negExp > now
				if fm.merged {
					answered = fm.asked
				}
				if v.answered != answered || v.negative != negative || v.negFresh != negFresh {
					t.Fatalf("t=%d: look(%s, %v) = %+v, want answered at %d, negative %t, fresh negative %t",
						now, name, x, v, answered, negative, negFresh)
				}
			}
		}
	})
}

// FuzzBudget spends from and waits on the query budget, two bytes per
// step: how long the clock moves, then how many tokens for which class.
//
// Properties: the level stays within [0, size]; a take succeeds exactly
// when it leaves its class's floor, and then spends exactly its cost; a
// refused take spends nothing and says how long to wait, after which the
// same take succeeds, and not a nanosecond before.
func FuzzBudget(f *testing.F) {
	f.Add(uint16(32), []byte{0, 0x22, 0, 0x22, 0, 0x41, 10, 0x02, 0, 0x3f})
	f.Add(uint16(500), []byte{0, 0xff, 0, 0xff, 200, 0x10})
	f.Add(uint16(1), []byte{0, 0x0f, 0, 0x0f, 0, 0x0f})
	f.Fuzz(func(t *testing.T, rate uint16, ops []byte) {
		if rate == 0 {
			return
		}
		b := newBudget(int(rate), 0)
		var now int64
		for len(ops) >= 2 {
			step, spend := ops[0], ops[1]
			ops = ops[2:]
			now += int64(step) * int64(time.Millisecond)
			n, c := int(spend&0x3f), class(spend>>6%3)
			b.mu.Lock()
			b.fill(now)
			before := b.level
			b.mu.Unlock()
			ok, wait := b.take(now, n, c)
			cost := int64(n) * perToken
			switch {
			case ok != (before-cost >= b.floor(c)):
				t.Fatalf("take(%d, class %d) = %t at level %d, floor %d", n, c, ok, before, b.floor(c))
			case ok && (wait != 0 || b.level != before-cost):
				t.Fatalf("take(%d) spent %d, waited %v", n, before-b.level, wait)
			case !ok && (wait <= 0 || b.level != before):
				t.Fatalf("refused take(%d) spent %d, wait %v", n, before-b.level, wait)
			case !ok:
				// A bucket can never hold more than its size.
				if cost+b.floor(c) > b.size {
					continue
				}
				if again, _ := b.take(now+int64(wait)-1, n, c); again {
					t.Fatalf("take(%d) succeeded a nanosecond before the wait of %v", n, wait)
				}
				now += int64(wait)
				if again, _ := b.take(now, n, c); !again {
					t.Fatalf("take(%d) refused after the wait of %v (level %d)", n, wait, b.level)
				}
			}
			if b.level < 0 || b.level > b.size {
				t.Fatalf("level %d outside [0, %d]", b.level, b.size)
			}
		}
	})
}
