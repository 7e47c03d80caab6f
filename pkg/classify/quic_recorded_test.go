package classify

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// readQUICRecording returns the UDP payloads of the first flow in a pcap
// recorded by test/quic-record.sh (client-to-server datagrams only), in
// capture order.
func readQUICRecording(t testing.TB, path string) [][]byte {
	t.Helper()
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	r, err := pcapgo.NewReader(file)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out [][]byte
	var port layers.UDPPort
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		udp, ok := gopacket.NewPacket(data, r.LinkType(), gopacket.Default).Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !ok {
			continue
		}
		if port == 0 {
			port = udp.SrcPort
		}
		if udp.SrcPort == port {
			out = append(out, udp.Payload)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no UDP datagrams", path)
	}
	return out
}

// TestQUICRecordedClients reads the Initials of real clients, recorded once
// by test/quic-record.sh: each flow must name the lab server after exactly
// the datagrams its ClientHello needs, and a two-datagram hello must also
// be read with its two datagrams swapped.
func TestQUICRecordedClients(t *testing.T) {
	const name = "name.example.test"
	for _, c := range []struct {
		file      string
		version   *quicVersion
		datagrams int  // datagrams until the hello is whole
		ech       bool // the client sends an ECH (GREASE) extension
	}{
		{"quic-go-x25519.pcap", &quicV1, 1, false},
		{"quic-go-default.pcap", &quicV1, 2, false},
		{"quic-go-v2.pcap", &quicV2, 2, false},
		{"quic-chromium.pcap", &quicV1, 2, true},
	} {
		t.Run(c.file, func(t *testing.T) {
			ds := readQUICRecording(t, filepath.Join("testdata", "quic", c.file))
			if len(ds) < c.datagrams {
				t.Fatalf("%d datagrams recorded, want at least %d", len(ds), c.datagrams)
			}
			f, res := feedAll(t, 0, ds[:c.datagrams]...)
			for i, r := range res[:c.datagrams-1] {
				wantStatus(t, r, NeedMore, nil)
				if len(ds[i]) < quicMinInitialDatagram {
					t.Errorf("datagram %d has %d bytes", i, len(ds[i]))
				}
			}
			got := res[c.datagrams-1]
			want := Result{Status: Done, Name: name, From: SourceQUIC, ECH: c.ech}
			if got != want {
				t.Fatalf("Result = %+v, want %+v", got, want)
			}
			if f.version != c.version {
				t.Errorf("version %#x, want %#x", f.version.number, c.version.number)
			}
			if c.datagrams == 2 {
				_, res := feedAll(t, 0, ds[1], ds[0])
				wantStatus(t, res[0], NeedMore, nil)
				if res[1] != want {
					t.Fatalf("swapped: Result = %+v, want %+v", res[1], want)
				}
			}
		})
	}
}
