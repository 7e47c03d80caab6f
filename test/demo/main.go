// Command demo shows egressd at work in the namespace lab: it builds the
// lab (client, nat, inet namespaces on documentation addresses), applies
// egressd's iptables rules on the NAT, runs egressd on examples/policy.yaml
// adapted to the lab, and sends real requests from the client: HTTPS that
// the policy allows and denies, and plain HTTP. Each request is shown with
// its decision line. Everything is torn down at the end, also on Ctrl-C.
//
// The example policy's names (github.com, pypi.org, pastebin.com, ...)
// resolve, in the lab's DNS only, to the lab's servers; its source subnet
// 10.0.1.0/24 is replaced by the lab client's 198.18.1.0/24. Nothing leaves
// the namespaces.
//
// Usage: go run ./test/demo -egressd bin/egressd   (as root; `make demo` does this)
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/egressd/egressd/test/lab"
)

func main() {
	bin := flag.String("egressd", "bin/egressd", "the egressd binary to run")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (network namespaces, iptables, NFQUEUE); run it as root")
		os.Exit(2)
	}
	// Signals first: an interrupt at any point tears down what exists.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	labs := make(chan *lab.Lab, 1)
	done := make(chan error, 1)
	go func() {
		l, err := lab.Create()
		labs <- l
		if err == nil {
			err = run(l, *bin)
		}
		done <- err
	}()
	var l *lab.Lab
	code := 0
	select {
	case err := <-done:
		l = <-labs
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			code = 1
		}
	case <-stop:
		fmt.Println("\ninterrupted: tearing the lab down")
		code = 130
		select {
		case l = <-labs:
		case <-time.After(10 * time.Second): // lab.Create is bounded; its partial lab comes back with it
		}
	}
	if l != nil {
		if err := l.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: cleanup:", err)
			code = 1
		}
		fmt.Println("lab removed")
	}
	os.Exit(code)
}

// labNames are names of the example policy, served in the lab.
var labNames = map[string]string{
	"github.com":     lab.ServerAddr,
	"api.github.com": lab.ServerAddr,
	"pypi.org":       lab.ServerAddr,
	"deb.debian.org": lab.ServerAddr,
	"pastebin.com":   lab.OtherAddr,
	"example.net":    lab.OtherAddr,
}

func run(l *lab.Lab, bin string) error {
	root, err := lab.Root()
	if err != nil {
		return err
	}
	example, err := os.ReadFile(filepath.Join(root, "examples/policy.yaml"))
	if err != nil {
		return err
	}
	policy := strings.NewReplacer("10.0.1.0/24", "198.18.1.0/24", "src: 10.0.1.7", "src: 198.18.1.2").Replace(string(example))
	for name, addr := range labNames {
		l.DNS.SetAddrs(name, 300, netip.MustParseAddr(addr))
	}
	fmt.Printf("lab %s: client %s -> nat %s | %s -> inet %s (and .11, .53 DNS)\n",
		l.ID, lab.ClientAddr, lab.NATPrivate, lab.NATPublic, lab.ServerAddr)
	if err := l.ApplyRules(lab.Rules{}); err != nil {
		return err
	}
	fmt.Println("rules applied on the NAT: scripts/iptables/egressd-iptables.sh apply --private n0 --public n1")
	e, err := l.StartEgressd(lab.EgressdOptions{Binary: bin, Policy: policy})
	if err != nil {
		return err
	}
	fmt.Println("egressd running on examples/policy.yaml (source subnet adapted to the lab)")

	ctx := context.Background()
	step := func(title, url, host, port, addr string) {
		fmt.Printf("\n== %s\n$ curl %s   (%s -> %s)\n", title, url, host, addr)
		start := len(e.Decisions())
		r := l.Curl(ctx, url, host, port, addr)
		switch {
		case r.Exit == 0:
			fmt.Printf("   %s", r.Stdout)
		default:
			fmt.Printf("   curl failed (exit %d): %s\n", r.Exit, strings.TrimSpace(r.Stderr))
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(e.Decisions()) == start && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		for _, d := range e.Decisions()[start:] {
			fmt.Printf("   decision: %s\n", d.Raw)
		}
	}
	step("HTTPS to an allowed name (rule github)", "https://api.github.com/", "api.github.com", "443", lab.ServerAddr)
	step("HTTPS to a name on the deny list (rule no-paste-or-tunnels): reset", "https://pastebin.com/", "pastebin.com", "443", lab.OtherAddr)
	step("HTTPS to a name no rule allows (default deny): reset", "https://example.net/", "example.net", "443", lab.OtherAddr)
	step("HTTPS with an allowed name sent to another server: DNS says no (dns-mismatch)", "https://github.com/", "github.com", "443", lab.OtherAddr)
	step("Plain HTTP, decided on the Host header (rule os-packages)", "http://deb.debian.org/", "deb.debian.org", "80", lab.ServerAddr)
	fmt.Println("\nstopping egressd (SIGTERM); its rules stay, so new flows would now fail closed")
	return e.Stop()
}
