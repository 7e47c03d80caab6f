package lab

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"time"
)

// CurlResult is what a curl run in the client namespace gave.
type CurlResult struct {
	Exit   int // curl's exit status (0 success; 7 refused; 35/56 reset; 28 timeout)
	Stdout string
	Stderr string
}

func (r CurlResult) String() string {
	return fmt.Sprintf("curl exit %d, stdout %q, stderr %q", r.Exit, r.Stdout, strings.TrimSpace(r.Stderr))
}

// Curl fetches url from the client namespace, resolving host to addr
// (--resolve) and trusting the lab's CA.
func (l *Lab) Curl(ctx context.Context, url, host, port, addr string, extra ...string) CurlResult {
	args := []string{"-sS", "--max-time", "8", "--cacert", l.CA.PEMPath,
		"--resolve", host + ":" + port + ":" + addr}
	args = append(args, extra...)
	args = append(args, url)
	cmd := Command(ctx, l.Client, "curl", args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := CurlResult{Stdout: out.String(), Stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.Exit = ee.ExitCode()
	} else if err != nil {
		r.Exit = -1
		r.Stderr += err.Error()
	}
	return r
}

// HTTPClient is a Go net/http client whose connections start in the client
// namespace, with addresses given for the lab's names (no DNS on the
// client), trusting the lab's CA.
func (l *Lab) HTTPClient(resolve map[string]string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if a, ok := resolve[host]; ok {
			addr = net.JoinHostPort(a, port)
		}
		return l.Client.DialContext(ctx, network, addr)
	}
	return &http.Client{
		Timeout: 8 * time.Second,
		Transport: &http.Transport{
			DialContext:       dial,
			TLSClientConfig:   &tls.Config{RootCAs: l.CA.Pool},
			DisableKeepAlives: true,
			ForceAttemptHTTP2: false,
		},
	}
}
