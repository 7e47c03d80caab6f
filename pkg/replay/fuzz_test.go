package replay

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/egressd/egressd/internal/pcapgen"
	"github.com/egressd/egressd/pkg/policy"
)

// FuzzReplay feeds arbitrary bytes to replay as a capture or a decision
// log, with and without a baseline and checksum checks: whatever the
// input, replay returns (an error or a summary) without panicking, hanging
// or allocating without bound, and every line it writes is one JSON
// object.
func FuzzReplay(f *testing.F) {
	pol := mustPolicy(f, testPolicy)
	base := mustPolicy(f, newLabPolicy)
	flow := allowedFlow(f)

	// A TLS flow in classic pcap: the path through the engine.
	f.Add(classic(1, false, wrap(ethHeader, flow)), uint8(0))
	// Big-endian, VLAN-tagged, cooked v1 and v2, raw, loopback headers.
	f.Add(classic(1, true, wrap(vlanHeader, flow)), uint8(1))
	f.Add(classic(113, false, wrap(sllHeader, flow)), uint8(0))
	f.Add(classic(276, false, wrap(sll2Header, flow)), uint8(2))
	f.Add(classic(101, false, flow), uint8(3))
	f.Add(classic(0, false, wrap([]byte{2, 0, 0, 0}, flow)), uint8(0))
	// A snap length that cuts the hello.
	f.Add(classicSnap(1, false, wrap(ethHeader, flow), 80), uint8(0))
	// Fragments of the hello segment, last first.
	data := append([]byte(nil), flow[3]...)
	data[6] &^= 0x40
	fr := pcapgen.Fragment(data, 256)
	f.Add(classic(101, false, append([][]byte{flow[0], fr[len(fr)-1]}, fr[:len(fr)-1]...)), uint8(1))
	// pcapng with two interfaces of different link types.
	var ng bytes.Buffer
	w, _ := pcapgo.NewNgWriter(&ng, layers.LinkTypeEthernet)
	sll, _ := w.AddInterface(pcapgo.NgInterface{LinkType: layers.LinkTypeLinuxSLL, SnapLength: 262144})
	for i, p := range flow {
		fr, idx := append(append([]byte(nil), ethHeader...), p...), 0
		if i%2 == 1 {
			fr, idx = append(append([]byte(nil), sllHeader...), p...), sll
		}
		w.WritePacket(gopacket.CaptureInfo{Timestamp: start.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(fr), Length: len(fr), InterfaceIndex: idx}, fr)
	}
	w.Flush()
	f.Add(ng.Bytes(), uint8(2))
	// gzip around a pcap.
	var gz bytes.Buffer
	z := gzip.NewWriter(&gz)
	z.Write(classic(1, false, wrap(ethHeader, flow)))
	z.Close()
	f.Add(gz.Bytes(), uint8(0))
	// Decision-log lines: a decision, an operational log line.
	f.Add([]byte(logLineFor("203.0.113.10", 443, "tcp", "allowed.example.test", "sni", "allow", "web", "rule", "verified")+"\n"+
		`{"time":"2026-11-24T10:00:00Z","level":"INFO","msg":"egressd running"}`+"\n"), uint8(3))

	f.Fuzz(func(t *testing.T, in []byte, mode uint8) {
		opts := Options{VerifyChecksums: mode&1 != 0, MaxConns: 64}
		var b *policy.Policy
		if mode&2 != 0 {
			b = base
		}
		var out bytes.Buffer
		sum, _ := Run(bytes.NewReader(in), &out, pol, b, opts)
		if sum == nil {
			t.Fatal("no summary")
		}
		for line := range bytes.Lines(out.Bytes()) {
			if !json.Valid(line) {
				t.Fatalf("invalid line %q", line)
			}
		}
	})
}
