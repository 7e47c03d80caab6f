package classify

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// segment is one client-to-server TCP segment as the engine would feed it.
type segment struct {
	seq     uint32
	syn     bool
	payload []byte
}

// fixture is a flow head: the client's ISN and its segments in the order
// they crossed the wire.
type fixture struct {
	name string
	isn  uint32
	segs []segment
}

// stream reassembles the fixture's bytes from ISN+1 on, by a method of its
// own (a byte map), for comparing with the reassembler.
func (f fixture) stream() []byte {
	got := map[uint32]byte{}
	for _, s := range f.segs {
		off := s.seq - (f.isn + 1)
		if s.syn {
			off = 0
		}
		for i, c := range s.payload {
			got[off+uint32(i)] = c
		}
	}
	var out []byte
	for i := uint32(0); ; i++ {
		c, ok := got[i]
		if !ok {
			return out
		}
		out = append(out, c)
	}
}

// defaultHexISN puts the sequence wrap 256 bytes into every hex fixture.
const defaultHexISN = 0xffffff00 - 1

// loadHexFixture reads grouped hex: '#' comments, "isn N" (optional),
// "seg OFF [syn]" starting a segment whose first byte sits OFF bytes after
// ISN+1, then hex bytes (spaces and newlines ignored).
func loadHexFixture(t testing.TB, path string) fixture {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fx := fixture{name: path, isn: defaultHexISN}
	var hexBuf strings.Builder
	flush := func() {
		if len(fx.segs) == 0 {
			return
		}
		b, err := hex.DecodeString(hexBuf.String())
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		fx.segs[len(fx.segs)-1].payload = b
		hexBuf.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case f[0] == "isn":
			v, err := strconv.ParseUint(f[1], 0, 32)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			fx.isn = uint32(v)
		case f[0] == "seg":
			flush()
			off, err := strconv.ParseUint(f[1], 0, 32)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			s := segment{seq: fx.isn + 1 + uint32(off)}
			if len(f) > 2 && f[2] == "syn" {
				s.syn, s.seq = true, fx.isn
			}
			fx.segs = append(fx.segs, s)
		default:
			hexBuf.WriteString(strings.ReplaceAll(line, " ", ""))
		}
	}
	flush()
	return fx
}

// tcpPcapGlob matches the captures of TCP clients that
// test/record-clients.sh writes (other captures in testdata/ are QUIC's).
const tcpPcapGlob = "testdata/tcp-*.pcap"

// loadPcapFixture reads a capture of one TCP connection and returns the
// client's segments: the client is the sender of the first SYN without ACK;
// its SYN and every segment of its with payload are kept, in capture order.
func loadPcapFixture(t testing.TB, path string) fixture {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	fx := fixture{name: path}
	var client gopacket.Flow
	var clientPort layers.TCPPort
	found := false
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		p := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
		tcpL, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		nl := p.NetworkLayer()
		if tcpL == nil || nl == nil {
			continue
		}
		if !found {
			if tcpL.SYN && !tcpL.ACK {
				client, clientPort, found = nl.NetworkFlow(), tcpL.SrcPort, true
				fx.isn = tcpL.Seq
				fx.segs = append(fx.segs, segment{seq: tcpL.Seq, syn: true, payload: bytes.Clone(tcpL.Payload)})
			}
			continue
		}
		if nl.NetworkFlow() != client || tcpL.SrcPort != clientPort || tcpL.SYN || len(tcpL.Payload) == 0 {
			continue
		}
		fx.segs = append(fx.segs, segment{seq: tcpL.Seq, payload: bytes.Clone(tcpL.Payload)})
	}
	if !found {
		t.Fatalf("%s: no SYN from a client", path)
	}
	return fx
}
