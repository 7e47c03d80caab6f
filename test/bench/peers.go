package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/egressd/egressd/internal/netnstest"
	"github.com/egressd/egressd/test/lab"
)

// The peers are what an operator would run instead of egressd, from
// Debian's packages, each as its own foreground instance in the lab's NAT
// namespace with a config, pid file and logs under the lab's directory.
// The NAT redirects the clients' port 443 to them (iptables REDIRECT), as a
// transparent proxy is deployed.

const (
	squidPort     = 3129  // https_port intercept
	nginxPort     = 8443  // stream listen
	nginxLongPort = 15201 // stream listen: the long flows, relayed as TCP
)

// peer is a proxy process started for the bench.
type peer struct {
	name string
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
	err  error
}

// startPeer starts bin in namespace ns in a process group of its own
// (nginx forks workers), with its output in dir/<name>.out, and waits
// until it accepts connections on host:port there.
func startPeer(ctx context.Context, l *lab.Lab, ns *netnstest.NS, name, dir, host string, port int, bin string, args ...string) (*peer, error) {
	out, err := os.Create(filepath.Join(dir, name+".out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	// Not tied to ctx: the peer is stopped by stop, after the bench.
	cmd := lab.Command(context.Background(), ns, bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &peer{name: name, cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := ns.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return p, nil
		}
		select {
		case <-p.done:
			log, _ := os.ReadFile(out.Name())
			return nil, fmt.Errorf("%s exited (%v):\n%s", name, p.err, tail(log, 2000))
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s: nothing listens on %s after 15s", name, addr)
		}
	}
}

// stop ends the peer's process group: SIGTERM, then SIGKILL after 5s.
// Only the group of the process the bench started is signalled.
func (p *peer) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Children (nginx workers) outlive a killed master: end the group.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// redirect sends the clients' TLS (TCP 443 arriving on the private side)
// to a local port of the NAT, and their long flows (TCP iperfPort) to
// another, on top of plain NAT.
func redirect(l *lab.Lab, port, longPort int) error {
	if err := l.ApplyPlainNAT(); err != nil {
		return err
	}
	for from, to := range map[int]int{443: port, iperfPort: longPort} {
		out, err := lab.Exec(context.Background(), l.NAT, "iptables", "-w", "-t", "nat", "-A", "PREROUTING",
			"-i", lab.PrivateIF, "-p", "tcp", "--dport", strconv.Itoa(from), "-j", "REDIRECT", "--to-ports", strconv.Itoa(to))
		if err != nil {
			return fmt.Errorf("iptables REDIRECT: %v: %s", err, out)
		}
	}
	return nil
}

// peerDir makes a directory for a proxy under the lab's directory, owned
// by the user the proxy drops root for (the lab's directory gets o+x so it
// can reach it), and returns it with that user's ids.
func peerDir(l *lab.Lab, name, owner string) (dir string, uid, gid int, err error) {
	u, err := user.Lookup(owner)
	if err != nil {
		return "", 0, 0, fmt.Errorf("user %s (from the Debian package): %w", owner, err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	if err := os.Chmod(l.Dir, 0o711); err != nil {
		return "", 0, 0, err
	}
	dir = filepath.Join(l.Dir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", 0, 0, err
	}
	return dir, uid, gid, os.Chown(dir, uid, gid)
}

// Squid 5 (Debian's squid-openssl) intercepting TLS: peek at the
// ClientHello (step 1), splice the allowed name, terminate the rest. Like
// egressd it reads the SNI and lets the client's own TLS session through
// untouched; unlike egressd it terminates the client's TCP connection and
// opens its own to the original destination. Squid's defaults otherwise:
// one worker, memory-only cache (disabled here), its own DNS client
// (pointed at the lab's resolver).
var squidConf = template.Must(template.New("squid").Parse(`# egressd bench-lab: Squid as a transparent TLS filter (peek and splice).
visible_hostname egressd-benchlab
cache_effective_user proxy
pid_filename {{.Dir}}/squid.pid
cache_log {{.Dir}}/cache.log
access_log stdio:{{.Dir}}/access.log
logfile_rotate 0
coredump_dir {{.Dir}}
netdb_filename none
pinger_enable off
cache deny all
cache_mem 8 MB
shutdown_lifetime 1 seconds
max_filedescriptors 65536
dns_nameservers {{.DNS}}

acl localnet src {{.ClientNet}}
acl SSL_ports port 443
http_access deny CONNECT !SSL_ports
http_access allow localnet
http_access deny all

http_port 127.0.0.1:3128
https_port {{.Port}} intercept ssl-bump tls-cert={{.Dir}}/bump.pem tls-key={{.Dir}}/bump.key generate-host-certificates=off

acl step1 at_step SslBump1
acl allowed_sni ssl::server_name {{.Name}}
ssl_bump peek step1
ssl_bump splice allowed_sni
ssl_bump terminate all

# The bench's long flows (iperf3, no TLS) reach this port too, and are
# tunnelled to their destination: what Squid does with a flow it lets
# through without a name.
acl long_flow dst {{.LongDst}}
on_unsupported_protocol tunnel long_flow
on_unsupported_protocol respond all
`))

// nginx (Debian's nginx with libnginx-mod-stream) as a transparent SNI
// proxy: read the ClientHello's server name (ssl_preread), map an allowed
// name to its upstream (resolved through the lab's resolver), refuse the
// rest. Debian's defaults kept: workers as www-data, one worker per CPU.
var nginxConf = template.Must(template.New("nginx").Parse(`# egressd bench-lab: nginx as a transparent SNI proxy (stream, ssl_preread).
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
user www-data;
worker_processes auto;
daemon off;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;
events {
	worker_connections 16384;
}
stream {
	resolver {{.DNS}} valid=60s ipv6=off;
	map $ssl_preread_server_name $egress_upstream {
		{{.Name}} {{.Name}}:443;
		default 127.0.0.1:9;
	}
	log_format sni '$remote_addr:$remote_port $ssl_preread_server_name $upstream_addr $status $session_time';
	access_log {{.Dir}}/access.log sni;
	server {
		listen {{.Port}} reuseport backlog=4096;
		ssl_preread on;
		proxy_pass $egress_upstream;
		proxy_connect_timeout 5s;
	}
	# The bench's long flows (iperf3, no TLS), relayed as TCP.
	server {
		listen {{.LongPort}} reuseport;
		proxy_pass {{.LongDst}};
		proxy_connect_timeout 5s;
	}
}
`))

type peerParams struct {
	Dir, DNS, ClientNet, Name string
	Port, LongPort            int
	LongDst                   string // the long flows' server: an address (Squid), address:port (nginx)
}

func writeConf(t *template.Template, path string, p peerParams) error {
	var b strings.Builder
	if err := t.Execute(&b, p); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// startSquid sets up the squid scenario in l.
func startSquid(ctx context.Context, l *lab.Lab) (*peer, error) {
	bin, err := exec.LookPath("squid")
	if err != nil {
		return nil, errors.New("squid is not installed (apt-get install squid-openssl)")
	}
	dir, uid, gid, err := peerDir(l, "squid", "proxy")
	if err != nil {
		return nil, err
	}
	if err := selfSigned(dir, "bump", "egressd benchlab squid", uid, gid); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "squid.conf")
	if err := writeConf(squidConf, conf, peerParams{Dir: dir, DNS: lab.DNSAddr, ClientNet: clientNet, Name: benchName, Port: squidPort, LongDst: lab.ServerAddr}); err != nil {
		return nil, err
	}
	if out, err := lab.Exec(ctx, l.NAT, bin, "-k", "parse", "-f", conf); err != nil {
		return nil, fmt.Errorf("squid -k parse: %v: %s", err, tail(out, 2000))
	}
	if err := redirect(l, squidPort, squidPort); err != nil {
		return nil, err
	}
	// -N: no daemon, no worker kids; Debian's unit runs --foreground with
	// the same single worker.
	return startPeer(ctx, l, l.NAT, "squid", dir, "127.0.0.1", squidPort, bin, "-N", "-f", conf)
}

// startNginx sets up the nginx scenario in l.
func startNginx(ctx context.Context, l *lab.Lab) (*peer, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return nil, errors.New("nginx is not installed (apt-get install nginx libnginx-mod-stream)")
	}
	if _, err := os.Stat("/usr/lib/nginx/modules/ngx_stream_module.so"); err != nil {
		return nil, errors.New("nginx's stream module is not installed (apt-get install libnginx-mod-stream)")
	}
	dir, _, _, err := peerDir(l, "nginx", "www-data")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := writeConf(nginxConf, conf, peerParams{Dir: dir, DNS: lab.DNSAddr, Name: benchName, Port: nginxPort,
		LongPort: nginxLongPort, LongDst: net.JoinHostPort(lab.ServerAddr, strconv.Itoa(iperfPort))}); err != nil {
		return nil, err
	}
	args := []string{"-p", dir + "/", "-c", conf, "-e", filepath.Join(dir, "error.log")}
	if out, err := lab.Exec(ctx, l.NAT, bin, append(args, "-t")...); err != nil {
		return nil, fmt.Errorf("nginx -t: %v: %s", err, tail(out, 2000))
	}
	if err := redirect(l, nginxPort, nginxLongPort); err != nil {
		return nil, err
	}
	return startPeer(ctx, l, l.NAT, "nginx", dir, "127.0.0.1", nginxPort, bin, args...)
}

// selfSigned writes name.pem and name.key (ECDSA P-256) into dir, owned by
// uid:gid: Squid's ssl-bump port wants a certificate even when it never
// bumps (it splices or terminates).
func selfSigned(dir, name, cn string, uid, gid int) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	files := map[string]*pem.Block{
		name + ".pem": {Type: "CERTIFICATE", Bytes: der},
		name + ".key": {Type: "PRIVATE KEY", Bytes: kder},
	}
	for f, b := range files {
		path := filepath.Join(dir, f)
		if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
			return err
		}
		if err := os.Chown(path, uid, gid); err != nil {
			return err
		}
	}
	return nil
}
