package lab

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Servers are the lab's servers in inet. Each records the connections it
// accepted, so a test can tell whether a flow reached the server at all.
type Servers struct {
	mu       sync.Mutex
	accepted map[string]int // listen address -> connections accepted
	received map[string]int // listen address -> payload bytes received
	snis     []string       // server names the TLS servers were asked for
}

func (s *Servers) sawSNI(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snis = append(s.snis, name)
}

// SNIs returns the server names the TLS servers saw in ClientHellos, in
// order ("" for a hello without one).
func (s *Servers) SNIs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.snis...)
}

func (s *Servers) count(addr string, accepted, received int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accepted[addr] += accepted
	s.received[addr] += received
}

// Accepted returns how many connections the server at addr has accepted.
func (s *Servers) Accepted(addr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted[addr]
}

// Received returns how many payload bytes the raw servers at addr (echo,
// banner) have read.
func (s *Servers) Received(addr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.received[addr]
}

// Body is what the lab's HTTPS and HTTP servers answer: it names the host
// the request asked for and the address that served it.
func Body(host, local string) string {
	return fmt.Sprintf("egressd lab: %s served by %s\n", host, local)
}

func startServers(l *Lab) (*Servers, error) {
	s := &Servers{accepted: map[string]int{}, received: map[string]int{}}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, Body(r.Host, local.String()))
	})
	serve := func(addr string, tlsOn bool) error {
		ln, err := l.Inet.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", addr, err)
		}
		ln = &countingListener{Listener: ln, s: s, addr: addr}
		if tlsOn {
			cfg := l.CA.ServerConfig()
			getCert := cfg.GetCertificate
			cfg.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
				s.sawSNI(h.ServerName)
				return getCert(h)
			}
			ln = tls.NewListener(ln, cfg)
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
		go srv.Serve(ln)
		l.onClose(func() error { return ignoreClosed(srv.Close()) })
		return nil
	}
	for _, a := range []string{ServerAddr, OtherAddr, CIDRAddr} {
		if err := serve(net.JoinHostPort(a, "443"), true); err != nil {
			return nil, err
		}
	}
	for _, a := range []string{ServerAddr, OtherAddr} {
		if err := serve(net.JoinHostPort(a, "80"), false); err != nil {
			return nil, err
		}
	}
	raw := func(addr string, fn func(net.Conn)) error {
		ln, err := l.Inet.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", addr, err)
		}
		l.onClose(func() error { return ignoreClosed(ln.Close()) })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				s.count(addr, 1, 0)
				go func() {
					defer c.Close()
					c.SetDeadline(time.Now().Add(30 * time.Second))
					fn(&countingConn{Conn: c, s: s, addr: addr})
				}()
			}
		}()
		return nil
	}
	echo := func(c net.Conn) { io.Copy(c, c) }
	banner := func(c net.Conn) {
		// A server that speaks first, then echoes.
		io.WriteString(c, Banner)
		io.Copy(c, c)
	}
	if err := raw(net.JoinHostPort(ServerAddr, strconv.Itoa(EchoPort)), echo); err != nil {
		return nil, err
	}
	for _, a := range []string{CIDRAddr, ServerAddr, OtherAddr} {
		if err := raw(net.JoinHostPort(a, "22"), echo); err != nil {
			return nil, err
		}
	}
	if err := raw(net.JoinHostPort(ServerAddr, strconv.Itoa(BannerPort)), banner); err != nil {
		return nil, err
	}
	if err := raw(net.JoinHostPort(BannerAddr, "443"), banner); err != nil {
		return nil, err
	}
	return s, nil
}

type countingListener struct {
	net.Listener
	s    *Servers
	addr string
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.s.count(l.addr, 1, 0)
	}
	return c, err
}

type countingConn struct {
	net.Conn
	s    *Servers
	addr string
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.s.count(c.addr, 0, n)
	return n, err
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
