package policy

import (
	"net/netip"
	"slices"
)

// prefixTable maps CIDR prefixes to values and finds every prefix that
// contains an address: one map lookup per distinct prefix length present
// (at most 33 for IPv4, 129 for IPv6; a real policy has a handful), no
// allocation. Built once at compile time, then read-only.
type prefixTable[T any] struct {
	m      map[netip.Prefix]T
	v4Lens []uint8 // prefix lengths present, longest first
	v6Lens []uint8
}

func newPrefixTable[T any]() *prefixTable[T] {
	return &prefixTable[T]{m: map[netip.Prefix]T{}}
}

// update replaces the value stored for p (masked) with fn(old).
func (t *prefixTable[T]) update(p netip.Prefix, fn func(T) T) {
	p = p.Masked()
	old, ok := t.m[p]
	if !ok {
		lens := &t.v6Lens
		if p.Addr().Is4() {
			lens = &t.v4Lens
		}
		if b := uint8(p.Bits()); !slices.Contains(*lens, b) {
			*lens = append(*lens, b)
			slices.Sort(*lens)
			slices.Reverse(*lens)
		}
	}
	t.m[p] = fn(old)
}

// lens returns the prefix lengths to try for addr, longest first.
func (t *prefixTable[T]) lens(addr netip.Addr) []uint8 {
	if addr.Is4() {
		return t.v4Lens
	}
	return t.v6Lens
}

// lookup returns the value stored for addr masked to bits.
func (t *prefixTable[T]) lookup(addr netip.Addr, bits uint8) (T, bool) {
	p, err := addr.Prefix(int(bits))
	if err != nil {
		var zero T
		return zero, false
	}
	v, ok := t.m[p]
	return v, ok
}

// prefixSet answers "is this address in one of these prefixes" for a rule's
// from and cidrs. Small sets are scanned (faster than hashing below a few
// dozen entries); large ones use a prefixTable.
type prefixSet struct {
	list  []netip.Prefix // as written (masked), for Explain and String
	table *prefixTable[struct{}]
}

// linearMax is the size up to which a prefixSet scans its list.
const linearMax = 16

func newPrefixSet(list []netip.Prefix) prefixSet {
	s := prefixSet{list: list}
	if len(list) > linearMax {
		s.table = newPrefixTable[struct{}]()
		for _, p := range list {
			s.table.update(p, func(struct{}) struct{} { return struct{}{} })
		}
	}
	return s
}

func (s *prefixSet) empty() bool { return len(s.list) == 0 }

// contains reports whether addr is in any prefix of the set.
func (s *prefixSet) contains(addr netip.Addr) bool {
	if s.table == nil {
		for _, p := range s.list {
			if p.Contains(addr) {
				return true
			}
		}
		return false
	}
	for _, b := range s.table.lens(addr) {
		if _, ok := s.table.lookup(addr, b); ok {
			return true
		}
	}
	return false
}

// containing returns the first prefix of the set (as written) that holds
// addr, for Explain.
func (s *prefixSet) containing(addr netip.Addr) (netip.Prefix, bool) {
	for _, p := range s.list {
		if p.Contains(addr) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}
