package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/test/lab"
)

// The long flow: one iperf3 TCP stream from the client to inet through
// each scenario, to show that a flow's bytes after its decision cost what
// plain forwarding costs. iperf3 speaks no TLS, so it runs on a port of
// its own that egressd's policy allows by address (decided on the SYN,
// then in the kernel's fast path); nginx relays it as a TCP stream proxy
// and Squid tunnels it from its intercepting TLS port
// (on_unsupported_protocol), which is what each does with a flow it
// passes without reading a name.
const iperfPort = 5201

// longResult is one long-flow measurement.
type longResult struct {
	Scenario   string        `json:"scenario"`
	Rep        int           `json:"rep"`
	BitsPerSec float64       `json:"bits_per_sec"` // received by the server
	Retrans    int           `json:"retransmits"`
	ProcCPU    time.Duration `json:"nat_proc_cpu_ns"` // the NAT's processes over the run
	HostCPU    time.Duration `json:"host_cpu_ns"`
	Seconds    float64       `json:"seconds"`
}

// startIperf starts an iperf3 server in inet for the long flows, when they
// are measured.
func (s *scenario) startIperf(ctx context.Context) error {
	if _, err := exec.LookPath("iperf3"); err != nil {
		return errors.New("iperf3 is not installed (apt-get install iperf3)")
	}
	p, err := startPeer(ctx, s.lab, s.lab.Inet, "iperf3", s.lab.Dir, lab.ServerAddr, iperfPort,
		"iperf3", "-s", "-B", lab.ServerAddr, "-p", strconv.Itoa(iperfPort))
	if err != nil {
		return err
	}
	s.iperf = p
	return nil
}

// iperfOut is the part of iperf3 -J's output the bench reads.
type iperfOut struct {
	End struct {
		SumSent struct {
			Retransmits int `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Seconds       float64 `json:"seconds"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

func parseIperf(out []byte) (iperfOut, error) {
	var r iperfOut
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("iperf3 output: %w: %s", err, tail(out, 500))
	}
	if r.Error != "" {
		return r, fmt.Errorf("iperf3: %s", r.Error)
	}
	if r.End.SumReceived.BitsPerSecond <= 0 {
		return r, fmt.Errorf("iperf3 received nothing: %s", tail(out, 500))
	}
	return r, nil
}

// measureLong runs one iperf3 client for -long-flow against s.
func (b *bench) measureLong(ctx context.Context, s *scenario, rep int) (longResult, error) {
	r := longResult{Scenario: s.name, Rep: rep}
	before, err := s.snapshot()
	if err != nil {
		return r, err
	}
	secs := strconv.FormatFloat(b.o.longFlow.Seconds(), 'f', -1, 64)
	out, err := lab.Exec(ctx, s.lab.Client, "iperf3", "-c", lab.ServerAddr, "-p", strconv.Itoa(iperfPort), "-t", secs, "-J")
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	ip, perr := parseIperf(out)
	if perr != nil {
		return r, perr
	}
	if err != nil {
		return r, fmt.Errorf("iperf3: %v: %s", err, strings.TrimSpace(tail(out, 500)))
	}
	after, err := s.snapshot()
	if err != nil {
		return r, err
	}
	r.BitsPerSec, r.Seconds = ip.End.SumReceived.BitsPerSecond, ip.End.SumReceived.Seconds
	r.Retrans = ip.End.SumSent.Retransmits
	r.ProcCPU = after.procCPU - before.procCPU
	r.HostCPU = after.hostBusy - before.hostBusy
	return r, nil
}
