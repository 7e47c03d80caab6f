package classify

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// cursor reads a TLS structure that may not have arrived whole. s holds the
// bytes at hand; missing counts the bytes the enclosing length fields
// declare but that have not arrived yet (0: s is the whole structure).
//
// Every read checks its length against both and advances only when it
// succeeds. A read that runs past the bytes at hand but stays inside the
// declared length returns ErrTruncated (a valid prefix: feed more); a read
// past the declared length wraps ErrMalformed (a length that lies). Because
// the checks run in the same order whether or not the bytes are complete, a
// prefix is decided malformed exactly when the whole input would be, only
// sooner.
type cursor struct {
	s       cryptobyte.String
	missing int
}

// need checks that n more bytes can be read now.
func (c *cursor) need(n int, what string) error {
	if len(c.s) >= n {
		return nil
	}
	if len(c.s)+c.missing >= n {
		return ErrTruncated
	}
	return fmt.Errorf("%w: %s runs past its enclosing length", ErrMalformed, what)
}

func (c *cursor) u8(out *uint8, what string) error {
	if err := c.need(1, what); err != nil {
		return err
	}
	c.s.ReadUint8(out)
	return nil
}

func (c *cursor) u16(out *uint16, what string) error {
	if err := c.need(2, what); err != nil {
		return err
	}
	c.s.ReadUint16(out)
	return nil
}

func (c *cursor) skip(n int, what string) error {
	if err := c.need(n, what); err != nil {
		return err
	}
	c.s.Skip(n)
	return nil
}

// prefixed reads a length of lenBytes (1 or 2) octets and the field it
// prefixes into child. When the field has not arrived whole, child gets the
// part at hand and the count of the rest, and c keeps nothing at hand, so the
// next read from c returns ErrTruncated. The field's length is returned so
// callers can check its bounds before reading inside it.
func (c *cursor) prefixed(lenBytes int, child *cursor, what string) (int, error) {
	var n int
	switch lenBytes {
	case 1:
		var v uint8
		if err := c.u8(&v, what); err != nil {
			return 0, err
		}
		n = int(v)
	default:
		var v uint16
		if err := c.u16(&v, what); err != nil {
			return 0, err
		}
		n = int(v)
	}
	switch {
	case n <= len(c.s):
		*child = cursor{s: c.s[:n]}
		c.s.Skip(n)
	case n <= len(c.s)+c.missing:
		*child = cursor{s: c.s, missing: n - len(c.s)}
		c.missing -= n - len(c.s)
		c.s = nil
	default:
		return 0, fmt.Errorf("%w: %s length %d runs past its enclosing length", ErrMalformed, what, n)
	}
	return n, nil
}

// whole returns ErrTruncated unless the field has arrived whole. A field
// that is skipped rather than read member by member must pass it, or a
// parent whose declared length ends with that field would look complete.
func (c *cursor) whole() error {
	if c.missing > 0 {
		return ErrTruncated
	}
	return nil
}

// bytes returns the next n bytes, which must have arrived.
func (c *cursor) bytes(n int, what string) ([]byte, error) {
	if err := c.need(n, what); err != nil {
		return nil, err
	}
	var b []byte
	c.s.ReadBytes(&b, n)
	return b, nil
}

// more reports whether a list has another element at hand. At the end of
// the bytes at hand it returns ErrTruncated when the list declares more.
func (c *cursor) more() (bool, error) {
	if len(c.s) > 0 {
		return true, nil
	}
	if c.missing > 0 {
		return false, ErrTruncated
	}
	return false, nil
}

// done checks that a fixed structure has no bytes left, at hand or declared:
// a field may not carry trailing bytes after its last member.
func (c *cursor) done(what string) error {
	if len(c.s) != 0 || c.missing != 0 {
		return fmt.Errorf("%w: %d trailing bytes in %s", ErrMalformed, len(c.s)+c.missing, what)
	}
	return nil
}
