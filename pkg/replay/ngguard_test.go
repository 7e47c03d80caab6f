package replay

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// ngBlock builds a little-endian pcapng block around body.
func ngBlock(typ uint32, body []byte) []byte {
	n := uint32(12 + len(body))
	b := binary.LittleEndian.AppendUint32(nil, typ)
	b = binary.LittleEndian.AppendUint32(b, n)
	b = append(b, body...)
	return binary.LittleEndian.AppendUint32(b, n)
}

func ngSHBBody() []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0x1a2b3c4d)
	b = binary.LittleEndian.AppendUint16(b, 1)
	b = binary.LittleEndian.AppendUint16(b, 0)
	return append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff) // section length unknown
}

func ngIDBBody(link uint16, snap uint32, opts ...[]byte) []byte {
	b := binary.LittleEndian.AppendUint16(nil, link)
	b = append(b, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, snap)
	for _, o := range opts {
		b = append(b, o...)
	}
	return b
}

func ngOption(code uint16, value []byte) []byte {
	b := binary.LittleEndian.AppendUint16(nil, code)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(value)))
	b = append(b, value...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func ngEPBBody(frame []byte, caplen uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0)
	ts := uint64(start.UnixMicro())
	b = binary.LittleEndian.AppendUint32(b, uint32(ts>>32))
	b = binary.LittleEndian.AppendUint32(b, uint32(ts))
	b = binary.LittleEndian.AppendUint32(b, caplen)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(frame)))
	b = append(b, frame...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// TestNgGuard: the blocks pcapgo would trust too far are refused with an
// error that says where, or read safely.
func TestNgGuard(t *testing.T) {
	pol := mustPolicy(t, testPolicy)
	frame := append(append([]byte(nil), ethHeader...), allowedFlow(t)[0]...)
	shb := ngBlock(ngSHB, ngSHBBody())
	idb := ngBlock(ngIDB, ngIDBBody(1, 262144))
	epb := ngBlock(ngEPB, ngEPBBody(frame, uint32(len(frame))))
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tc := range []struct {
		name    string
		in      []byte
		errText string // "": replayed without error
		packets uint64
	}{
		{"a well-formed file", cat(shb, idb, epb), "", 1},
		{"a snap length of 4 GiB is read as no limit", cat(shb, ngBlock(ngIDB, ngIDBBody(1, 0xffffffff)), epb), "", 1},
		{"a link type past 255 is none replay reads", cat(shb, ngBlock(ngIDB, ngIDBBody(257, 0)), epb), "", 1},
		{"nanosecond timestamps", cat(shb, ngBlock(ngIDB, ngIDBBody(1, 0, ngOption(9, []byte{9}), ngOption(0, nil))), epb), "", 1},
		{"a captured length past its block", cat(shb, idb, ngBlock(ngEPB, ngEPBBody(frame, 1<<30))), "overruns its block", 0},
		{"a block length not a multiple of 4", cat(shb, idb, epb[:4], []byte{13, 0, 0, 0}, epb[8:]), "not a multiple of 4", 0},
		{"a block longer than any packet", cat(shb, idb, epb[:4], []byte{0, 0, 0, 0x40}, epb[8:]), "not a multiple of 4 within", 0},
		{"trailing length differs", cat(shb, idb, epb[:len(epb)-4], []byte{0, 1, 0, 0}), "trailing length", 0},
		{"an option past its block", cat(shb, ngBlock(ngIDB, ngIDBBody(1, 0, []byte{2, 0, 200, 0})), epb), "overruns its block", 0},
		{"a binary timestamp resolution of 2^-127", cat(shb, ngBlock(ngIDB, ngIDBBody(1, 0, ngOption(9, []byte{0xff}))), epb), "timestamp resolution", 0},
		{"a decimal timestamp resolution of 10^-64", cat(shb, ngBlock(ngIDB, ngIDBBody(1, 0, ngOption(9, []byte{64}))), epb), "timestamp resolution", 0},
		{"a packet before any interface", cat(shb, epb), "interface", 0},
		{"an unknown byte order", cat(shb[:8], []byte{1, 2, 3, 4}, shb[12:], idb, epb), "byte-order magic", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			sum, err := Run(bytes.NewReader(tc.in), &out, pol, nil, Options{})
			switch {
			case tc.errText == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.errText != "" && (err == nil || !strings.Contains(err.Error(), tc.errText)):
				t.Fatalf("error %v, want one saying %q", err, tc.errText)
			}
			if sum.Packets != tc.packets {
				t.Errorf("%d packets read, want %d", sum.Packets, tc.packets)
			}
		})
	}
}
