package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/egressd/egressd/internal/netnstest"
)

// Capture is a tcpdump running on an interface of a namespace.
type Capture struct {
	Path   string
	cancel context.CancelFunc
	done   chan error
}

// StartCapture starts tcpdump on iface in ns with a capture filter and
// returns once it is listening.
func (l *Lab) StartCapture(ns *netnstest.NS, iface, filter string) (*Capture, error) {
	path := filepath.Join(l.Dir, fmt.Sprintf("%s-%s-%d.pcap", ns.Name, iface, time.Now().UnixNano()))
	ctx, cancel := context.WithCancel(context.Background())
	// --immediate-mode: without it libpcap hands packets over in blocks,
	// up to a second late, and a capture stopped soon after the traffic
	// misses it. The file is written by root (-Z root): tcpdump would
	// otherwise drop to a user that cannot write the lab's directory.
	cmd := Command(ctx, ns, "tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-Z", "root", "-s", "0", "-w", path, filter)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) } // tcpdump flushes on SIGINT
	stderr, err := cmd.StderrPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	c := &Capture{Path: path, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		r := bufio.NewReader(stderr)
		signalled := false
		for {
			line, err := r.ReadString('\n')
			if !signalled && strings.Contains(line, "listening on") {
				close(ready)
				signalled = true
			}
			if err != nil {
				if !signalled {
					close(ready)
				}
				io.Copy(io.Discard, r)
				break
			}
		}
		c.done <- cmd.Wait()
	}()
	l.onClose(func() error { c.cancel(); return nil })
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		cancel()
		return nil, fmt.Errorf("tcpdump on %s did not start", iface)
	}
	return c, nil
}

// CapturedPacket is one packet of a capture, decoded to what the tests
// look at.
type CapturedPacket struct {
	Time             time.Time
	Src, Dst         string
	SrcPort, DstPort int
	SYN, RST         bool
	TTL              int
	Payload          int // TCP or UDP payload bytes
	IPLen            int // the IPv4 total length
	// ICMP is true for an ICMP packet, whose type and code follow.
	ICMP               bool
	ICMPType, ICMPCode uint8
	TCPOptions         []byte // the TCP header's options, as they arrived
	Data               []byte // the whole frame, from the link-layer header on
}

// Stop ends the capture and returns its packets.
func (c *Capture) Stop() ([]CapturedPacket, error) {
	// Give the last packets a moment to cross the capture socket, then
	// stop tcpdump (SIGINT: it writes what it has and exits).
	time.Sleep(100 * time.Millisecond)
	c.cancel()
	<-c.done
	return ReadPcap(c.Path)
}

// ReadPcap reads the packets of a pcap file (a capture's, or a recording).
func ReadPcap(path string) ([]CapturedPacket, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return nil, err
	}
	var out []CapturedPacket
	for {
		data, ci, err := r.ReadPacketData()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			// A packet cut off by the stop: keep what came before.
			return out, nil
		}
		pkt := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
		cp := CapturedPacket{Time: ci.Timestamp, Data: data}
		if ip, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
			cp.Src, cp.Dst, cp.TTL, cp.IPLen = ip.SrcIP.String(), ip.DstIP.String(), int(ip.TTL), int(ip.Length)
		}
		if icmp, ok := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
			cp.ICMP, cp.ICMPType, cp.ICMPCode = true, icmp.TypeCode.Type(), icmp.TypeCode.Code()
		} else if tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
			cp.SrcPort, cp.DstPort = int(tcp.SrcPort), int(tcp.DstPort)
			cp.SYN, cp.RST = tcp.SYN, tcp.RST
			cp.Payload = len(tcp.Payload)
			cp.TCPOptions = append([]byte(nil), tcp.Contents[20:]...)
		} else if udp, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
			cp.SrcPort, cp.DstPort = int(udp.SrcPort), int(udp.DstPort)
			cp.Payload = len(udp.Payload)
		}
		out = append(out, cp)
	}
}
