package replay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ngGuard sits between a pcapng file and pcapgo's NgReader. pcapgo trusts
// the lengths it reads: a forged capture length allocates up to 4 GiB, an
// option that runs past its block desynchronises the reader, and some
// timestamp resolutions divide by zero. The guard reads one whole block at
// a time (at most maxBlock bytes), checks what pcapgo would trust, and
// only then hands the block's bytes on. Blocks are defined in the pcapng
// specification (draft-ietf-opsawg-pcapng, section 4).
type ngGuard struct {
	r   io.Reader
	buf []byte // the current block, checked
	off int    // bytes of buf already handed on
	pos int64  // file offset of the current block, for errors
	err error

	big     bool   // the current section's byte order
	ifaces  int    // interface description blocks in the section
	snap0   uint32 // the first interface's snap length (simple packet blocks use it)
	started bool   // a section header has been read
}

// maxBlock bounds one block: a packet of maxSnap bytes with room for
// options.
const maxBlock = maxSnap + 64<<10

// Block types (section 4 and 11.1 of the draft).
const (
	ngSHB = 0x0a0d0d0a // section header
	ngIDB = 1          // interface description
	ngPB  = 2          // packet (obsolete)
	ngSPB = 3          // simple packet
	ngISB = 5          // interface statistics
	ngEPB = 6          // enhanced packet
)

func (g *ngGuard) Read(p []byte) (int, error) {
	for g.off == len(g.buf) {
		if g.err != nil {
			return 0, g.err
		}
		g.pos += int64(len(g.buf))
		g.buf, g.off = g.buf[:0], 0
		if err := g.block(); err != nil {
			g.buf = g.buf[:0]
			g.err = err
		}
	}
	n := copy(p, g.buf[g.off:])
	g.off += n
	return n, nil
}

func (g *ngGuard) u16(b []byte) uint16 {
	if g.big {
		return binary.BigEndian.Uint16(b)
	}
	return binary.LittleEndian.Uint16(b)
}

func (g *ngGuard) u32(b []byte) uint32 {
	if g.big {
		return binary.BigEndian.Uint32(b)
	}
	return binary.LittleEndian.Uint32(b)
}

func (g *ngGuard) fail(format string, a ...any) error {
	return fmt.Errorf("pcapng block at byte %d: %s", g.pos, fmt.Sprintf(format, a...))
}

// block reads and checks the next block into g.buf.
func (g *ngGuard) block() error {
	var hdr [12]byte
	if _, err := io.ReadFull(g.r, hdr[:8]); err != nil {
		if errors.Is(err, io.EOF) {
			return io.EOF // a clean end between blocks
		}
		return io.ErrUnexpectedEOF
	}
	typ := binary.LittleEndian.Uint32(hdr[0:4]) // the SHB type reads the same both ways
	hlen := 8
	if typ == ngSHB {
		if _, err := io.ReadFull(g.r, hdr[8:12]); err != nil {
			return io.ErrUnexpectedEOF
		}
		switch {
		case binary.BigEndian.Uint32(hdr[8:12]) == 0x1a2b3c4d:
			g.big = true
		case binary.LittleEndian.Uint32(hdr[8:12]) == 0x1a2b3c4d:
			g.big = false
		default:
			return g.fail("section header with an unknown byte-order magic %x", hdr[8:12])
		}
		hlen = 12
		g.started, g.ifaces, g.snap0 = true, 0, 0
	} else {
		typ = g.u32(hdr[0:4])
	}
	if !g.started {
		return g.fail("the file does not start with a section header")
	}
	total := g.u32(hdr[4:8])
	if total < 12 || total%4 != 0 || total > maxBlock || (typ == ngSHB && total < 28) {
		return g.fail("type %#x: length %d is not a multiple of 4 within 12..%d", typ, total, maxBlock)
	}
	if cap(g.buf) < int(total) {
		g.buf = make([]byte, 0, total)
	}
	g.buf = append(g.buf[:0], hdr[:hlen]...)
	g.buf = g.buf[:total]
	if _, err := io.ReadFull(g.r, g.buf[hlen:]); err != nil {
		return io.ErrUnexpectedEOF
	}
	if trail := g.u32(g.buf[total-4:]); trail != total {
		return g.fail("type %#x: trailing length %d differs from the leading %d", typ, trail, total)
	}
	return g.check(typ, g.buf[8:total-4])
}

// check validates a block's body (between the lengths) as pcapgo will
// read it.
func (g *ngGuard) check(typ uint32, body []byte) error {
	switch typ {
	case ngSHB: // byte-order magic, version, section length, options
		return g.options(body[16:], false)
	case ngIDB: // link type, reserved, snap length, options
		if len(body) < 8 {
			return g.fail("interface description too short")
		}
		// pcapgo keeps the link type in a byte: map it first.
		lt := uint16(normalizeLink(uint32(g.u16(body[0:2]))))
		if g.big {
			binary.BigEndian.PutUint16(body[0:2], lt)
		} else {
			binary.LittleEndian.PutUint16(body[0:2], lt)
		}
		// pcapgo sizes its packet buffer from the snap length: a larger
		// one than any real capture is read as "no limit" (0), which
		// bounds each buffer by its block instead.
		if g.u32(body[4:8]) > maxSnap {
			clear(body[4:8])
		}
		if g.ifaces == 0 {
			g.snap0 = g.u32(body[4:8])
		}
		g.ifaces++
		return g.options(body[8:], true)
	case ngEPB, ngPB: // interface, timestamp (8), captured length, original length, data
		if len(body) < 20 {
			return g.fail("packet block too short")
		}
		if int64(g.u32(body[12:16])) > int64(len(body)-20) {
			return g.fail("captured length %d overruns its block", g.u32(body[12:16]))
		}
	case ngSPB: // original length, data (as much as the first interface's snap length)
		if len(body) < 4 {
			return g.fail("simple packet block too short")
		}
		n := g.u32(body[0:4])
		if g.snap0 != 0 && n > g.snap0 {
			n = g.snap0
		}
		if int64(n) > int64(len(body)-4) {
			return g.fail("simple packet length %d overruns its block", n)
		}
	case ngISB: // interface, timestamp, options
		if len(body) < 12 {
			return g.fail("interface statistics too short")
		}
		return g.options(body[12:], false)
	}
	return nil
}

// options checks a block's options (section 3.5): each must fit in the
// block, and an interface's timestamp resolution must be one pcapgo can
// compute with.
func (g *ngGuard) options(b []byte, idb bool) error {
	for len(b) >= 4 {
		code, n := g.u16(b[0:2]), int(g.u16(b[2:4]))
		if code == 0 { // opt_endofopt
			return nil
		}
		padded := (n + 3) &^ 3
		if 4+padded > len(b) {
			return g.fail("option %d of %d bytes overruns its block", code, n)
		}
		if idb && code == 9 { // if_tsresol: one byte
			if n < 1 {
				return g.fail("empty timestamp resolution")
			}
			v := b[4]
			if (v&0x80 != 0 && v&0x7f > 63) || (v&0x80 == 0 && v > 19) {
				return g.fail("timestamp resolution %#x is out of range", v)
			}
		}
		b = b[4+padded:]
	}
	return nil
}
