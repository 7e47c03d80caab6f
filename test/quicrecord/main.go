// Command quicrecord is the Go half of test/quic-record.sh: a quic-go
// HTTP/3 server and client that the script runs inside a network namespace
// of its own while tcpdump records the client's datagrams. It is a lab
// tool, run by a person once to refresh pkg/classify/testdata/quic/*.pcap;
// nothing in `make test` runs it.
//
//	quicrecord -mode server -addr 127.0.0.1:443 -name NAME -spki FILE -for 2m
//	quicrecord -mode client -addr 127.0.0.1:443 -name NAME [-curves x25519] [-version 2]
//
// The server holds each new client's first datagram for a moment before
// reading it (see holdFirst), and answers every request with "ok" under a
// fresh self-signed
// certificate for NAME (ECDSA P-256) and writes the base64 SHA-256 of the
// certificate's public key (what Chromium's
// --ignore-certificate-errors-spki-list takes) to the -spki file once it
// listens. The client GETs https://NAME/ with quic-go's HTTP/3 client,
// dialling -addr whatever NAME resolves to, and does not verify the
// certificate (its only job is to send a real ClientHello). Both stop on
// their own: the server after -for, the client after 10 seconds at most.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

func main() {
	mode := flag.String("mode", "", "server or client")
	addr := flag.String("addr", "127.0.0.1:443", "UDP address the server listens on and the client dials")
	name := flag.String("name", "name.example.test", "server name: the certificate's name and the client's SNI")
	spki := flag.String("spki", "", "server: file to write the certificate's SPKI hash (base64 SHA-256) to")
	runFor := flag.Duration("for", 2*time.Minute, "server: stop after this long")
	curves := flag.String("curves", "default", "client: default (Go's, with X25519MLKEM768) or x25519 (a one-datagram hello)")
	version := flag.Int("version", 1, "client: QUIC version to start with, 1 or 2")
	flag.Parse()

	var err error
	switch *mode {
	case "server":
		err = serve(*addr, *name, *spki, *runFor)
	case "client":
		err = get(*addr, *name, *curves, *version)
	default:
		err = errors.New("-mode must be server or client")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "quicrecord:", err)
		os.Exit(1)
	}
}

func serve(addr, name, spkiFile string, runFor time.Duration) error {
	cert, spki, err := selfSigned(name)
	if err != nil {
		return err
	}
	srv := &http3.Server{
		Addr:       addr,
		TLSConfig:  http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}),
		QUICConfig: &quic.Config{Versions: []quic.Version{quic.Version1, quic.Version2}},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "ok\n")
		}),
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, runFor)
	defer cancel()

	udp, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	tr := &quic.Transport{Conn: &holdFirst{PacketConn: udp, seen: map[string]bool{}}}
	defer tr.Close()
	ln, err := tr.ListenEarly(srv.TLSConfig, srv.QUICConfig)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	if spkiFile != "" {
		if err := os.WriteFile(spkiFile, []byte(spki+"\n"), 0o644); err != nil {
			return err
		}
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ln) }()
	select {
	case <-ctx.Done():
		_ = srv.Close()
		<-done
		return nil
	case err := <-done:
		return err
	}
}

// holdFirst delays the server's reading of each new client's first
// datagram, as egressd holds an undecided flow: the server cannot answer
// before the client has sent its whole ClientHello, so the recording shows
// what egressd sees. (A server that answers the first of two hello
// datagrams makes the client switch to the server's connection ID for the
// second, RFC 9000 section 7.2, which cannot happen behind egressd.)
type holdFirst struct {
	net.PacketConn
	seen map[string]bool // only the one goroutine quic-go reads with uses it
}

// holdFor is long enough for a client on loopback to send every datagram
// of its hello.
const holdFor = 300 * time.Millisecond

func (h *holdFirst) ReadFrom(p []byte) (int, net.Addr, error) {
	n, from, err := h.PacketConn.ReadFrom(p)
	if err == nil && !h.seen[from.String()] {
		h.seen[from.String()] = true
		time.Sleep(holdFor)
	}
	return n, from, err
}

// selfSigned makes a certificate for name and returns it with its SPKI
// hash in the form Chromium takes.
func selfSigned(name string) (tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	sum := sha256.Sum256(pub)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		base64.StdEncoding.EncodeToString(sum[:]), nil
}

func get(addr, name, curves string, version int) error {
	// A lab client: it only has to send a real hello, so it trusts any certificate.
	tlsConf := &tls.Config{ServerName: name, InsecureSkipVerify: true}
	switch curves {
	case "default":
	case "x25519":
		tlsConf.CurvePreferences = []tls.CurveID{tls.X25519}
	default:
		return fmt.Errorf("-curves %q: want default or x25519", curves)
	}
	qconf := &quic.Config{Versions: []quic.Version{quic.Version1}}
	switch version {
	case 1:
	case 2:
		// http3 dials with exactly one version.
		qconf.Versions = []quic.Version{quic.Version2}
	default:
		return fmt.Errorf("-version %d: want 1 or 2", version)
	}
	tr := &http3.Transport{
		TLSClientConfig: tlsConf,
		QUICConfig:      qconf,
		Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			return quic.DialAddrEarly(ctx, addr, tlsCfg, cfg)
		},
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+name+"/", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s", resp.Status, body)
	return nil
}
