package resolve

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

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
