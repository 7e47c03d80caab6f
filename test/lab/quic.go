package lab

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// StartQUIC serves HTTP/3 (QUIC v1 and v2) on UDP 443 of ServerAddr and
// OtherAddr, with the same body as the TCP servers. The lab's TCP servers
// do not start it: only the tests that use QUIC pay for it.
func (l *Lab) StartQUIC() error {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		addr := "?"
		if local != nil {
			addr = local.String()
		}
		io.WriteString(w, Body(r.Host, addr))
	})
	for _, a := range []string{ServerAddr, OtherAddr} {
		addr := net.JoinHostPort(a, "443")
		pc, err := l.Inet.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("QUIC listen %s: %w", addr, err)
		}
		cfg := l.CA.ServerConfig()
		getCert := cfg.GetCertificate
		cfg.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			l.Servers.sawSNI(h.ServerName)
			l.Servers.count(addr+"/udp", 1, 0)
			return getCert(h)
		}
		srv := &http3.Server{
			Handler:    handler,
			TLSConfig:  http3.ConfigureTLSConfig(cfg),
			QUICConfig: &quic.Config{Versions: []quic.Version{quic.Version1, quic.Version2}},
		}
		tr := &quic.Transport{Conn: pc}
		ln, err := tr.ListenEarly(srv.TLSConfig, srv.QUICConfig)
		if err != nil {
			pc.Close()
			return fmt.Errorf("QUIC listen %s: %w", addr, err)
		}
		go srv.ServeListener(ln)
		l.onClose(func() error {
			srv.Close()
			tr.Close()
			return nil
		})
	}
	return nil
}

// H3Get fetches https://name/ over HTTP/3 from the client namespace, to
// addr (an IP), trusting the lab's CA. version is 1 or 2.
func (l *Lab) H3Get(ctx context.Context, name, addr string, version int) (string, error) {
	pc, err := l.Client.ListenPacket("udp", ClientAddr+":0")
	if err != nil {
		return "", err
	}
	qtr := &quic.Transport{Conn: pc}
	defer qtr.Close()
	v := quic.Version1
	if version == 2 {
		v = quic.Version2
	}
	raddr := &net.UDPAddr{IP: net.ParseIP(addr), Port: 443}
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: l.CA.Pool, ServerName: name},
		QUICConfig:      &quic.Config{Versions: []quic.Version{v}, HandshakeIdleTimeout: 3 * time.Second},
		Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			return qtr.DialEarly(ctx, raddr, tlsCfg, cfg)
		},
	}
	defer tr.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+name+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
