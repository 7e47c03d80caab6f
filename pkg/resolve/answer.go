package resolve

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

const (
	// ednsSize is the UDP payload size advertised in queries: the DNS flag
	// day 2020 value, which avoids IP fragmentation on any path. A larger
	// answer comes back with TC set and is asked again over TCP.
	ednsSize = 1232
	// maxChain is the number of CNAME links followed from the question.
	// Resolvers give up well before this (BIND at 16 in total, Unbound
	// at 11); a longer chain in an answer is refused as malformed.
	maxChain = 8
	// headerLen is the fixed DNS header (RFC 1035 §4.1.1).
	headerLen = 12
)

// question is one query as it was sent.
type question struct {
	id    uint16
	name  string // lowercase, fully qualified (trailing dot)
	qtype uint16 // dns.TypeA or dns.TypeAAAA
}

// pack builds the query: one question, RD set (the servers are recursive
// resolvers), an EDNS0 OPT record advertising ednsSize.
func (q question) pack() ([]byte, error) {
	m := new(dns.Msg)
	m.Id = q.id
	m.RecursionDesired = true
	m.Question = []dns.Question{{Name: q.name, Qtype: q.qtype, Qclass: dns.ClassINET}}
	m.SetEdns0(ednsSize, false)
	return m.Pack()
}

// ttlAddr is one address an answer vouches for, with its TTL in seconds:
// the smallest TTL along the CNAME chain that led to it.
type ttlAddr struct {
	addr netip.Addr
	ttl  uint32
}

// answer is what one valid response says about its question. Either addrs
// is non-empty, or the answer is negative (NXDOMAIN or NODATA, RFC 2308):
// then negTTL is valid iff hasSOA.
type answer struct {
	addrs  []ttlAddr
	negTTL uint32
	hasSOA bool
}

// readAnswer checks that resp answers q and returns the addresses it vouches
// for. Every failure is an error wrapping ErrMalformed, ErrTruncated,
// ErrServFail or ErrRcode; no address is returned with an error.
func readAnswer(q question, resp []byte) (answer, error) {
	if len(resp) < headerLen {
		return answer{}, fmt.Errorf("%w: %d bytes, shorter than a header", ErrMalformed, len(resp))
	}
	var m dns.Msg
	if err := m.Unpack(resp); err != nil {
		return answer{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	// miekg/dns stops quietly when a section holds fewer records than the
	// header announces, and ignores bytes after the last record; an answer
	// cut short or padded is not an answer.
	if end, ok := wireEnd(resp); !ok || end != len(resp) {
		return answer{}, fmt.Errorf("%w: records do not fill the %d bytes exactly", ErrMalformed, len(resp))
	}
	counts := [4]int{len(m.Question), len(m.Answer), len(m.Ns), len(m.Extra)}
	for i, got := range counts {
		if want := int(binary.BigEndian.Uint16(resp[4+2*i:])); got != want {
			return answer{}, fmt.Errorf("%w: section %d holds %d records, header says %d", ErrMalformed, i, got, want)
		}
	}
	// RFC 1035 §4.1.1, §7.3: a response matches a query by ID, has QR set,
	// and repeats the question. Anything else may be an old or forged reply.
	if m.Id != q.id {
		return answer{}, fmt.Errorf("%w: ID %d, want %d", ErrMalformed, m.Id, q.id)
	}
	if !m.Response || m.Opcode != dns.OpcodeQuery {
		return answer{}, fmt.Errorf("%w: not a response to a query (QR %t, opcode %d)", ErrMalformed, m.Response, m.Opcode)
	}
	if len(m.Question) != 1 {
		return answer{}, fmt.Errorf("%w: %d questions, want 1", ErrMalformed, len(m.Question))
	}
	if got := m.Question[0]; !strings.EqualFold(got.Name, q.name) || got.Qtype != q.qtype || got.Qclass != dns.ClassINET {
		return answer{}, fmt.Errorf("%w: question %s %s %s, want %s %s IN", ErrMalformed,
			got.Name, dns.TypeToString[got.Qtype], dns.ClassToString[got.Qclass], q.name, dns.TypeToString[q.qtype])
	}
	if m.Truncated {
		return answer{}, ErrTruncated
	}
	switch m.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	case dns.RcodeServerFailure:
		return answer{}, ErrServFail
	default:
		return answer{}, fmt.Errorf("%w: %s", ErrRcode, dns.RcodeToString[m.Rcode])
	}

	final, chainTTL, err := followChain(m.Answer, q.name)
	if err != nil {
		return answer{}, err
	}
	var a answer
	if m.Rcode == dns.RcodeSuccess {
		a.addrs = chainAddrs(m.Answer, final, q.qtype, chainTTL)
	}
	if len(a.addrs) == 0 {
		a.negTTL, a.hasSOA = negativeTTL(m.Ns, final)
	}
	return a, nil
}

// followChain walks the CNAME records of an answer section from qname and
// returns the name at the end of the chain and the smallest TTL along it.
//
// RFC 1034 §3.6.2: a name with a CNAME has no other data, and has one
// CNAME; §4.3.2 step 3: the resolver restarts the lookup at the target and
// puts the chain in the answer. So only records on the chain answer the
// question. Two CNAMEs with different targets for one owner, a chain that
// comes back to a name on it, or one longer than maxChain is malformed.
func followChain(rrs []dns.RR, qname string) (string, uint32, error) {
	var seen [maxChain + 1]string
	seen[0] = qname
	cur, ttl := qname, uint32(math.MaxUint32)
	for links := 0; ; links++ {
		next := ""
		for _, rr := range rrs {
			c, ok := rr.(*dns.CNAME)
			if !ok || c.Hdr.Class != dns.ClassINET || !strings.EqualFold(c.Hdr.Name, cur) {
				continue
			}
			if next != "" && !strings.EqualFold(next, c.Target) {
				return "", 0, fmt.Errorf("%w: %s has two CNAMEs (%s, %s)", ErrMalformed, cur, next, c.Target)
			}
			next = c.Target
			ttl = min(ttl, rrTTL(c.Hdr.Ttl))
		}
		if next == "" {
			return cur, ttl, nil
		}
		if links == maxChain {
			return "", 0, fmt.Errorf("%w: CNAME chain from %s longer than %d", ErrMalformed, qname, maxChain)
		}
		for _, s := range seen[:links+1] {
			if strings.EqualFold(s, next) {
				return "", 0, fmt.Errorf("%w: CNAME loop at %s", ErrMalformed, next)
			}
		}
		seen[links+1] = next
		cur = next
	}
}

// chainAddrs returns the qtype addresses owned by final, each with the
// smaller of its own TTL and the chain's. A records must hold IPv4 and AAAA
// records IPv6 that is not IPv4-mapped: an IPv4 destination is verified
// against A records only.
func chainAddrs(rrs []dns.RR, final string, qtype uint16, chainTTL uint32) []ttlAddr {
	var out []ttlAddr
	for _, rr := range rrs {
		h := rr.Header()
		if h.Rrtype != qtype || h.Class != dns.ClassINET || !strings.EqualFold(h.Name, final) {
			continue
		}
		var ip netip.Addr
		var ok bool
		switch r := rr.(type) {
		case *dns.A:
			ip, ok = netip.AddrFromSlice(r.A)
			ip = ip.Unmap()
			ok = ok && ip.Is4()
		case *dns.AAAA:
			ip, ok = netip.AddrFromSlice(r.AAAA)
			ok = ok && ip.Is6() && !ip.Is4In6()
		}
		if ok {
			out = append(out, ttlAddr{addr: ip, ttl: min(chainTTL, rrTTL(h.Ttl))})
		}
	}
	return out
}

// negativeTTL is how long a negative answer may be cached: the smaller of
// the SOA record's TTL and its MINIMUM field (RFC 2308 §5), from an SOA in
// the authority section whose owner is final or an ancestor of it. The
// smallest wins when there are several; ok is false when there is none.
func negativeTTL(ns []dns.RR, final string) (ttl uint32, ok bool) {
	ttl = math.MaxUint32
	for _, rr := range ns {
		s, isSOA := rr.(*dns.SOA)
		if !isSOA || s.Hdr.Class != dns.ClassINET || !dns.IsSubDomain(s.Hdr.Name, final) {
			continue
		}
		ttl, ok = min(ttl, rrTTL(s.Hdr.Ttl), rrTTL(s.Minttl)), true
	}
	if !ok {
		return 0, false
	}
	return ttl, true
}

// rrTTL reads a TTL as RFC 2181 §8 says: a value with the top bit set is 0.
func rrTTL(ttl uint32) uint32 {
	if ttl > math.MaxInt32 {
		return 0
	}
	return ttl
}

// wireEnd walks a message by its header counts, skipping names and
// RDATA by their lengths, and returns the offset where the last record
// ends. ok is false when the message ends first. It does not read inside
// records; Unpack does.
func wireEnd(b []byte) (end int, ok bool) {
	off := headerLen
	skipName := func() bool {
		for off < len(b) {
			l := int(b[off])
			switch {
			case l == 0:
				off++
				return true
			case l&0xC0 == 0xC0: // compression pointer ends the name
				off += 2
				return off <= len(b)
			case l&0xC0 != 0: // 0x40, 0x80: obsolete label types
				return false
			}
			off += 1 + l
		}
		return false
	}
	qd := int(binary.BigEndian.Uint16(b[4:]))
	for range qd {
		if !skipName() || off+4 > len(b) {
			return 0, false
		}
		off += 4 // QTYPE, QCLASS
	}
	rrs := int(binary.BigEndian.Uint16(b[6:])) + int(binary.BigEndian.Uint16(b[8:])) + int(binary.BigEndian.Uint16(b[10:]))
	for range rrs {
		if !skipName() || off+10 > len(b) {
			return 0, false
		}
		off += 10 + int(binary.BigEndian.Uint16(b[off+8:])) // TYPE CLASS TTL RDLENGTH, RDATA
		if off > len(b) {
			return 0, false
		}
	}
	return off, true
}
