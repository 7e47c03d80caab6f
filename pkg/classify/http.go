package classify

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/egressd/egressd/internal/hostname"
)

// methods are the request methods accepted, from RFC 9110 §9.3 and PATCH
// (RFC 5789). Any other token, including registered extension methods
// such as WebDAV's PROPFIND, makes the flow not-tls-or-http: an inspected
// port carries the common methods, and a short fixed list lets the flow be
// refused from its first bytes. Adding a method here is all it takes to
// accept it. Their first letters (C D G H O P T) are the bytes that start
// HTTP for the first-byte decision.
var methods = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

const maxMethodLen = len("CONNECT") // also OPTIONS

// methodPrefix checks the start of a flow head against the methods: it
// returns nil when b is a method and a space (and more), ErrTruncated when b
// is a prefix of one, and ErrNotTLS otherwise.
func methodPrefix(b []byte) error {
	b = b[:min(len(b), maxMethodLen+1)]
	for _, m := range methods {
		n := min(len(b), len(m))
		if string(b[:n]) != m[:n] {
			continue
		}
		if len(b) <= len(m) {
			return ErrTruncated
		}
		if b[len(m)] == ' ' {
			return nil
		}
	}
	return fmt.Errorf("%w: %q does not start an HTTP/1.x request", ErrNotTLS, b)
}

// RequestHead is what ParseRequestHead read. Every field is valid iff it
// returned a nil error; the slices alias its input.
type RequestHead struct {
	// Len is the length of the head, through the blank line's CRLF.
	Len int
	// Method and Target are the request line's method and request-target.
	Method, Target []byte
	// Minor is the HTTP/1.x minor version (0 or 1, or up to 9).
	Minor uint8
	// Host is set when the head had a Host header field.
	Host bool

	name    [MaxNameLen]byte
	nameLen uint8
}

// Name returns the normalised name the request is for (lowercase, no
// trailing dot, no port): the authority of an absolute-form or CONNECT
// target, else the Host header's. It is empty when the request names no
// host: HTTP/1.0 without Host, an empty Host, or an IP address (legal in
// HTTP, RFC 9110 §7.2, but not a name; the policy then decides by address).
// It points into r.
func (r *RequestHead) Name() []byte { return r.name[:r.nameLen] }

// ParseRequestHead reads an HTTP/1.x request head (RFC 9112 §2-§5) from the
// start of b: the request line and the header fields up to the blank line.
// Bytes after the head (a body, a pipelined request) are left alone; Len
// says where the head ends. ErrTruncated means b is a valid prefix of a
// head; ErrNotTLS that b does not start an HTTP/1.x request (an unknown
// method, another protocol, the HTTP/2 preface); ErrMalformed that it
// starts one but breaks a rule a server might read differently.
// ParseRequestHead does not allocate unless it returns such an error.
func ParseRequestHead(b []byte) (RequestHead, error) {
	var r httpReader
	if err := r.feed(b); err != nil {
		return RequestHead{}, err
	}
	return r.head, nil
}

// httpReader reads a request head as its bytes arrive: feed is given the
// whole prefix each time and goes on from where it stopped, so each byte is
// looked at once.
type httpReader struct {
	pos   int // start of the line being read
	scan  int // next byte to look at
	lines int // lines read
	hosts int // Host fields seen
	host  []byte
	head  RequestHead
	// authority is the request-target's authority (absolute-form,
	// authority-form), nil for origin-form and asterisk-form.
	authority []byte
}

func (r *httpReader) feed(b []byte) error {
	if r.lines == 0 {
		if err := methodPrefix(b); err != nil {
			return err
		}
	}
	for r.scan < len(b) {
		switch b[r.scan] {
		case 0:
			// RFC 9110 §5.5: NUL is never valid in a field; nor is it in a
			// request line (RFC 9112 §3). Refused wherever it appears.
			return fmt.Errorf("%w: NUL at byte %d of the request head", ErrMalformed, r.scan)
		case '\r':
			if r.scan+1 == len(b) {
				return ErrTruncated // is it CRLF? wait for the next byte
			}
			if b[r.scan+1] != '\n' {
				// RFC 9112 §2.2: a bare CR is invalid or must be read as
				// SP; servers differ, so refuse it.
				return fmt.Errorf("%w: bare CR at byte %d", ErrMalformed, r.scan)
			}
		case '\n':
			// RFC 9112 §2.2 lets a recipient accept a lone LF as a line
			// terminator ("MAY"). Servers differ (some accept it, some
			// answer 400), and a filter that splits lines differently from
			// the server can be shown one Host while the server reads
			// another. No real client sends it: refused as malformed.
			if r.scan == r.pos || b[r.scan-1] != '\r' {
				return fmt.Errorf("%w: line ending in LF without CR at byte %d", ErrMalformed, r.scan)
			}
			line := b[r.pos : r.scan-1]
			r.scan++
			r.pos = r.scan
			r.lines++
			if r.lines == 1 {
				if err := r.requestLine(line); err != nil {
					return err
				}
				continue
			}
			if len(line) == 0 {
				r.head.Len = r.scan
				return r.finish()
			}
			if err := r.field(line); err != nil {
				return err
			}
			continue
		}
		r.scan++
	}
	return ErrTruncated
}

// requestLine reads method SP request-target SP HTTP-version (RFC 9112 §3).
func (r *httpReader) requestLine(line []byte) error {
	sp := bytes.IndexByte(line, ' ')
	if err := methodPrefix(line[:sp+1]); sp < 0 || err != nil {
		return fmt.Errorf("%w: request line %q", ErrNotTLS, line)
	}
	method, rest := line[:sp], line[sp+1:]
	sp = bytes.LastIndexByte(rest, ' ')
	if sp < 0 {
		// No version: HTTP/0.9 or not HTTP at all.
		return fmt.Errorf("%w: request line %q has no HTTP version", ErrNotTLS, line)
	}
	target, version := rest[:sp], rest[sp+1:]
	// RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive.
	if !bytes.HasPrefix(version, []byte("HTTP/")) {
		return fmt.Errorf("%w: request line %q has no HTTP version", ErrNotTLS, line)
	}
	if len(version) != 8 || !isDigit(version[5]) || version[6] != '.' || !isDigit(version[7]) ||
		bytes.IndexByte(target, ' ') >= 0 {
		// A bad version, or extra spaces around the target: RFC 9112 §3
		// wants single SPs, and a lenient server splitting on runs of
		// whitespace would read another target than a strict one.
		return fmt.Errorf("%w: request line %q", ErrMalformed, line)
	}
	if version[5] != '1' {
		// HTTP/2.0 and others are not HTTP/1.x (the h2c preface "PRI *
		// HTTP/2.0" already fails on its method).
		return fmt.Errorf("%w: HTTP version %q", ErrNotTLS, version)
	}
	r.head.Method, r.head.Target, r.head.Minor = method, target, version[7]-'0'
	return r.target(string(method) == "CONNECT", string(method) == "OPTIONS")
}

// target checks the request-target's form (RFC 9112 §3.2) and keeps its
// authority when it has one.
func (r *httpReader) target(connect, options bool) error {
	t := r.head.Target
	if len(t) == 0 {
		return fmt.Errorf("%w: empty request-target", ErrMalformed)
	}
	for i, c := range t {
		// RFC 3986 characters are all visible ASCII; '#' never appears in
		// a request-target (RFC 9112 §3.2 has no fragment).
		if c <= ' ' || c >= 0x7f || c == '#' {
			return fmt.Errorf("%w: byte 0x%02x at %d in request-target", ErrMalformed, c, i)
		}
	}
	switch {
	case connect:
		// RFC 9112 §3.2.3: CONNECT takes authority-form, host:port only.
		r.authority = t
	case t[0] == '/': // origin-form
	case string(t) == "*" && options: // asterisk-form, RFC 9112 §3.2.4
	default:
		// absolute-form (RFC 9112 §3.2.2) of an http or https URI
		// (RFC 9110 §4.2): scheme "://" authority [path-abempty] [?query].
		i := bytes.Index(t, []byte("://"))
		if i < 0 || !(bytes.EqualFold(t[:i], []byte("http")) || bytes.EqualFold(t[:i], []byte("https"))) {
			return fmt.Errorf("%w: request-target %q is not origin-form or an http(s) URI", ErrMalformed, t)
		}
		a := t[i+3:]
		if end := bytes.IndexAny(a, "/?"); end >= 0 {
			a = a[:end]
		}
		r.authority = a
	}
	return nil
}

// field reads one header field line (RFC 9112 §5).
func (r *httpReader) field(line []byte) error {
	if line[0] == ' ' || line[0] == '\t' {
		// RFC 9112 §5.2: obs-fold; a server must reject it or unfold it,
		// and the two readings differ. Refused.
		return fmt.Errorf("%w: obs-fold (line starting with whitespace) %q", ErrMalformed, line)
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return fmt.Errorf("%w: header line %q has no field name", ErrMalformed, line)
	}
	name := line[:colon]
	for _, c := range name {
		if !isTchar(c) {
			// RFC 9112 §5.1: no whitespace between field name and colon
			// ("MUST reject"); any other non-token byte is no name either.
			return fmt.Errorf("%w: byte 0x%02x in field name %q", ErrMalformed, c, name)
		}
	}
	value := trimOWS(line[colon+1:])
	for _, c := range value {
		// RFC 9110 §5.5: field-value is VCHAR, SP, HTAB and obs-text;
		// CTLs (other than HTAB) and DEL are invalid.
		if c < ' ' && c != '\t' || c == 0x7f {
			return fmt.Errorf("%w: byte 0x%02x in field %q", ErrMalformed, c, name)
		}
	}
	if bytes.EqualFold(name, []byte("host")) {
		r.hosts++
		if r.hosts > 1 {
			// RFC 9112 §3.2: a server MUST answer 400 to more than one
			// Host, equal or not.
			return fmt.Errorf("%w: more than one Host field", ErrMalformed)
		}
		r.host = value
		r.head.Host = true
	}
	return nil
}

// finish checks the head as a whole and sets the name.
func (r *httpReader) finish() error {
	if r.hosts == 0 && r.head.Minor >= 1 {
		// RFC 9112 §3.2: an HTTP/1.1 request without Host gets a 400.
		return fmt.Errorf("%w: HTTP/1.1 request without Host", ErrMalformed)
	}
	var hostBuf [MaxNameLen]byte
	var h hostInfo
	if r.hosts == 1 && len(r.host) > 0 {
		var err error
		if h, err = parseHost(hostBuf[:0], r.host, false); err != nil {
			return fmt.Errorf("field Host %q: %w", r.host, err)
		}
	}
	if r.authority == nil {
		// RFC 9110 §7.2: an empty Host is what a client sends when the
		// target has no authority; it names nothing.
		r.head.nameLen = uint8(copy(r.head.name[:], h.name))
		return nil
	}
	connect := string(r.head.Method) == "CONNECT"
	t, err := parseHost(r.head.name[:0], r.authority, connect)
	if err != nil {
		return fmt.Errorf("request-target authority %q: %w", r.authority, err)
	}
	// RFC 9112 §3.2.2: an origin server uses the target's authority and
	// ignores Host, a proxy or a lenient server may use Host. The filter
	// names the flow by the target and refuses a Host that says otherwise
	// (design.md: "one Host header, matching the absolute URI").
	if r.hosts == 1 && !t.equal(h) {
		return fmt.Errorf("%w: Host %q does not match the request-target %q", ErrMalformed, r.host, r.head.Target)
	}
	r.head.nameLen = uint8(len(t.name))
	return nil
}

// hostInfo is a host from Host or a request-target's authority.
type hostInfo struct {
	raw  []byte // host as sent, without port
	name []byte // normalised name; nil for an IP address
	ip   bool
}

func (a hostInfo) equal(b hostInfo) bool {
	if a.ip || b.ip {
		return a.ip == b.ip && bytes.EqualFold(a.raw, b.raw)
	}
	return bytes.Equal(a.name, b.name)
}

// parseHost reads authority = host [":" port] (RFC 3986 §3.2, as RFC 9110
// §7.2 uses it for Host) and appends the normalised name to dst. An IP
// address (IPv6 in brackets, or what hostname.Check calls an IP literal)
// is no name.
// Userinfo, an empty host, an empty or out-of-range port and, when
// needPort, a missing port are ErrMalformed.
func parseHost(dst, auth []byte, needPort bool) (hostInfo, error) {
	if bytes.IndexByte(auth, '@') >= 0 {
		// RFC 9110 §4.2.4: userinfo is deprecated in http URIs, and Host
		// has none. "a.test@b.test" is read differently by different
		// parsers: refused.
		return hostInfo{}, fmt.Errorf("%w: userinfo in authority", ErrMalformed)
	}
	var host, port []byte
	hasPort := false
	if len(auth) > 0 && auth[0] == '[' {
		end := bytes.IndexByte(auth, ']')
		if end < 0 {
			return hostInfo{}, fmt.Errorf("%w: unclosed IP literal", ErrMalformed)
		}
		host = auth[:end+1]
		rest := auth[end+1:]
		if len(rest) > 0 {
			if rest[0] != ':' {
				return hostInfo{}, fmt.Errorf("%w: bytes after IP literal", ErrMalformed)
			}
			port, hasPort = rest[1:], true
		}
		for _, c := range host[1:end] {
			if !(isDigit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.') {
				return hostInfo{}, fmt.Errorf("%w: byte 0x%02x in IP literal", ErrMalformed, c)
			}
		}
		if end < 3 {
			return hostInfo{}, fmt.Errorf("%w: empty IP literal", ErrMalformed)
		}
	} else {
		host = auth
		if i := bytes.IndexByte(auth, ':'); i >= 0 {
			host, port, hasPort = auth[:i], auth[i+1:], true
		}
	}
	if hasPort {
		// RFC 3986 allows an empty port; an empty or overlong one is
		// refused here, since servers disagree on what it means.
		if len(port) == 0 || len(port) > 5 {
			return hostInfo{}, fmt.Errorf("%w: port %q", ErrMalformed, port)
		}
		v := 0
		for _, c := range port {
			if !isDigit(c) {
				return hostInfo{}, fmt.Errorf("%w: port %q", ErrMalformed, port)
			}
			v = v*10 + int(c-'0')
		}
		if v > 65535 {
			return hostInfo{}, fmt.Errorf("%w: port %q", ErrMalformed, port)
		}
	} else if needPort {
		return hostInfo{}, fmt.Errorf("%w: CONNECT target without port", ErrMalformed)
	}
	if len(host) == 0 {
		return hostInfo{}, fmt.Errorf("%w: empty host", ErrMalformed)
	}
	if host[0] == '[' || hostname.Check(host) == hostname.IPLiteral {
		return hostInfo{raw: host, ip: true}, nil
	}
	name, err := AppendName(dst, host)
	if err != nil {
		return hostInfo{}, err
	}
	return hostInfo{raw: host, name: name}, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isTchar reports whether c may appear in a token (RFC 9110 §5.6.2).
func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', isDigit(c):
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// trimOWS removes optional whitespace (SP, HTAB; RFC 9110 §5.6.3) around b.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
