// Command recordhello is the recorder's helper for test/record-clients.sh:
// a server that accepts connections and holds them without answering, and
// a Go crypto/tls client with the default configuration. It is meant to run
// only inside the network namespace that script creates.
//
//	recordhello serve ADDR...       accept on each ADDR, read and discard until killed
//	recordhello client NAME ADDR    send one default-config ClientHello for NAME to ADDR
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "recordhello:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) >= 2 && args[0] == "serve" {
		for _, addr := range args[1:] {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			go hold(ln)
		}
		select {} // until killed by the script
	}
	if len(args) == 3 && args[0] == "client" {
		return client(args[1], args[2])
	}
	return fmt.Errorf("usage: recordhello serve ADDR... | recordhello client NAME ADDR")
}

// hold accepts connections and reads them without ever answering, so each
// client sends its first flight (the ClientHello or request head) and waits.
func hold(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(io.Discard, c)
		}()
	}
}

// client sends the hello of a default tls.Config (only ServerName set):
// with Go 1.24 and later it carries an X25519MLKEM768 key share, which
// makes it larger than one 1460-byte segment. The server never answers, so
// the handshake ends at the deadline.
func client(name, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{ServerName: name}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		c.Close()
		return fmt.Errorf("handshake with %s completed; the holding server should never answer", addr)
	}
	return nil
}
