package classify

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// helloView is what a test compares of a ClientHello.
type helloView struct {
	Len     int
	Version uint16
	SNI     bool
	Name    string
	ECH     bool
	ALPN    []string
}

func viewHello(h *ClientHello) helloView {
	v := helloView{Len: h.Len, Version: h.Version, SNI: h.SNI, Name: string(h.ServerName()), ECH: h.ECH}
	for p := range h.ALPN() {
		v.ALPN = append(v.ALPN, string(p))
	}
	return v
}

func TestParseClientHelloRFC8448(t *testing.T) {
	fx := loadHexFixture(t, "testdata/rfc8448-s3-clienthello.hex")
	stream := fx.stream()
	// The record header says 196 bytes; the handshake header 192 + 4.
	if got := len(stream); got != 5+196 {
		t.Fatalf("fixture is %d bytes, the record header says 5+196", got)
	}
	h, err := ParseClientHello(stream[5:])
	if err != nil {
		t.Fatalf("ParseClientHello: %v", err)
	}
	want := helloView{Len: 196, Version: 0x0303, SNI: true, Name: "server"}
	if diff := cmp.Diff(want, viewHello(&h)); diff != "" {
		t.Errorf("RFC 8448 §3 ClientHello (-want +got):\n%s", diff)
	}
}

func TestParseClientHello(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	tests := []struct {
		name    string
		msg     []byte
		want    helloView
		wantErr error
	}{
		{
			name: "sni alpn ech",
			msg:  helloSpec{exts: []tlsExt{sniExt("www.example.test"), alpnExt("h2", "http/1.1"), echExt()}}.msg(),
			want: helloView{SNI: true, Name: "www.example.test", ECH: true, ALPN: []string{"h2", "http/1.1"}},
		},
		{
			name: "no extensions block (TLS 1.0-1.2 form)",
			msg:  helloSpec{noExts: true, version: 0x0301}.msg(),
			want: helloView{Version: 0x0301},
		},
		{
			name: "empty extensions block",
			msg:  helloSpec{}.msg(),
			want: helloView{},
		},
		{
			name: "no server_name: valid, no name",
			msg:  helloSpec{exts: []tlsExt{alpnExt("h2")}}.msg(),
			want: helloView{ALPN: []string{"h2"}},
		},
		{
			name: "ech without sni",
			msg:  helloSpec{exts: []tlsExt{echExt()}}.msg(),
			want: helloView{ECH: true},
		},
		{
			name: "uppercase is lowercased",
			msg:  helloSpec{exts: []tlsExt{sniExt("WWW.Example.TEST")}}.msg(),
			want: helloView{SNI: true, Name: "www.example.test"},
		},
		{
			name: "trailing dot is removed",
			msg:  helloSpec{exts: []tlsExt{sniExt("www.example.test.")}}.msg(),
			want: helloView{SNI: true, Name: "www.example.test"},
		},
		{
			name: "underscore and 63-octet label",
			msg:  helloSpec{exts: []tlsExt{sniExt("_svc." + long63 + ".example.test")}}.msg(),
			want: helloView{SNI: true, Name: "_svc." + long63 + ".example.test"},
		},
		{
			name: "unknown extensions and session id",
			msg: helloSpec{sessionID: make([]byte, 32), suites: []uint16{0x0a0a, 0x1301, 0x1302},
				exts: []tlsExt{{0x0a0a, nil}, sniExt("a.example.test"), {0xfe02, []byte{1, 2, 3}}}}.msg(),
			want: helloView{SNI: true, Name: "a.example.test"},
		},
		{name: "two server_name extensions", msg: helloSpec{exts: []tlsExt{sniExt("a.example.test"), sniExt("b.example.test")}}.msg(), wantErr: ErrMalformed},
		{name: "two equal server_name extensions", msg: helloSpec{exts: []tlsExt{sniExt("a.example.test"), sniExt("a.example.test")}}.msg(), wantErr: ErrMalformed},
		{name: "two host_names", msg: helloSpec{exts: []tlsExt{sniExt("a.example.test", "b.example.test")}}.msg(), wantErr: ErrMalformed},
		{name: "duplicate unrelated extension", msg: helloSpec{exts: []tlsExt{{0x0a0a, nil}, {0x0a0a, nil}}}.msg(), wantErr: ErrMalformed},
		{name: "empty server_name list", msg: helloSpec{exts: []tlsExt{sniExt()}}.msg(), wantErr: ErrMalformed},
		{name: "empty server_name extension data", msg: helloSpec{exts: []tlsExt{{extServerName, nil}}}.msg(), wantErr: ErrMalformed},
		{name: "empty host_name", msg: helloSpec{exts: []tlsExt{sniExt("")}}.msg(), wantErr: ErrMalformed},
		{name: "name_type not host_name", msg: helloSpec{exts: []tlsExt{{extServerName, []byte{0, 4, 1, 0, 1, 'a'}}}}.msg(), wantErr: ErrMalformed},
		{name: "server_name trailing byte", msg: helloSpec{exts: []tlsExt{{extServerName, append(sniExt("a.test").data, 0)}}}.msg(), wantErr: ErrMalformed},
		{name: "sni embedded NUL", msg: helloSpec{exts: []tlsExt{sniExt("a.example.test\x00.evil.test")}}.msg(), wantErr: ErrMalformed},
		{name: "sni 300-byte name", msg: helloSpec{exts: []tlsExt{sniExt(strings.Repeat("a.", 150))}}.msg(), wantErr: ErrMalformed},
		{name: "sni 64-octet label", msg: helloSpec{exts: []tlsExt{sniExt(long63 + "a.test")}}.msg(), wantErr: ErrMalformed},
		{name: "sni ipv4 literal", msg: helloSpec{exts: []tlsExt{sniExt("192.0.2.1")}}.msg(), wantErr: ErrMalformed},
		{name: "sni ipv6 literal", msg: helloSpec{exts: []tlsExt{sniExt("2001:db8::1")}}.msg(), wantErr: ErrMalformed},
		{name: "sni empty label", msg: helloSpec{exts: []tlsExt{sniExt("a..test")}}.msg(), wantErr: ErrMalformed},
		{name: "sni lone dot", msg: helloSpec{exts: []tlsExt{sniExt(".")}}.msg(), wantErr: ErrMalformed},
		{name: "sni space", msg: helloSpec{exts: []tlsExt{sniExt("a b.test")}}.msg(), wantErr: ErrMalformed},
		{name: "sni utf-8", msg: helloSpec{exts: []tlsExt{sniExt("bücher.test")}}.msg(), wantErr: ErrMalformed},
		{name: "empty alpn list", msg: helloSpec{exts: []tlsExt{{extALPN, []byte{0, 0}}}}.msg(), wantErr: ErrMalformed},
		{name: "empty alpn name", msg: helloSpec{exts: []tlsExt{alpnExt("h2", "")}}.msg(), wantErr: ErrMalformed},
		{name: "alpn name past list", msg: helloSpec{exts: []tlsExt{{extALPN, []byte{0, 3, 5, 'h', '2'}}}}.msg(), wantErr: ErrMalformed},
		{name: "legacy_version 0x0300", msg: helloSpec{version: 0x0300}.msg(), wantErr: ErrMalformed},
		{name: "legacy_version 0x0304", msg: helloSpec{version: 0x0304}.msg(), wantErr: ErrMalformed},
		{name: "session id of 33", msg: helloSpec{sessionID: make([]byte, 33)}.msg(), wantErr: ErrMalformed},
		{name: "odd cipher_suites", msg: func() []byte {
			m := helloSpec{noExts: true}.msg()
			m[4+2+32+1+1]++ // the low byte of the cipher_suites length
			return m
		}(), wantErr: ErrMalformed},
		{name: "no cipher_suites", msg: helloSpec{suites: []uint16{}}.msg(), wantErr: ErrMalformed},
		{name: "not a client_hello", msg: handshakeMsg(2, helloSpec{}.body()), wantErr: ErrMalformed},
		{name: "trailing bytes after message", msg: append(helloSpec{}.msg(), 0), wantErr: ErrMalformed},
		{name: "trailing bytes inside body", msg: handshakeMsg(1, append(helloSpec{}.body(), 0)), wantErr: ErrMalformed},
		{name: "handshake length shorter than body", msg: func() []byte {
			m := helloSpec{exts: []tlsExt{sniExt("a.example.test")}}.msg()
			m[3] -= 4 // the extensions now run past the message
			return m[:len(m)-4]
		}(), wantErr: ErrMalformed},
		{name: "extension length past block", msg: func() []byte {
			m := helloSpec{exts: []tlsExt{sniExt("a.example.test")}}.msg()
			m[len(m)-len(sniExt("a.example.test").data)-1] += 9
			return m
		}(), wantErr: ErrMalformed},
		{name: "129 extensions", msg: func() []byte {
			var exts []tlsExt
			for i := range 129 {
				exts = append(exts, tlsExt{uint16(0x1000 + i), nil})
			}
			return helloSpec{exts: exts}.msg()
		}(), wantErr: ErrLimit},
		{name: "empty", msg: nil, wantErr: ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseClientHello(tt.msg)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseClientHello = %v, want %v", err, tt.wantErr)
				}
				if diff := cmp.Diff(helloView{}, viewHello(&h)); diff != "" {
					t.Errorf("hello not zero on error (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseClientHello: %v", err)
			}
			want := tt.want
			want.Len = len(tt.msg)
			if want.Version == 0 {
				want.Version = 0x0303
			}
			if diff := cmp.Diff(want, viewHello(&h)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseClientHelloPrefixes checks that every strict prefix of a valid
// hello is ErrTruncated, and that a prefix of a malformed hello is never a
// name.
func TestParseClientHelloPrefixes(t *testing.T) {
	msgs := map[string][]byte{
		"rfc8448": loadHexFixture(t, "testdata/rfc8448-s3-clienthello.hex").stream()[5:],
		"built":   helloSpec{sessionID: make([]byte, 32), exts: []tlsExt{alpnExt("h2"), sniExt("a.example.test"), echExt()}}.msg(),
		"no-exts": helloSpec{noExts: true}.msg(),
	}
	for name, m := range msgs {
		t.Run(name, func(t *testing.T) {
			for i := range len(m) {
				if _, err := ParseClientHello(m[:i]); err != ErrTruncated {
					t.Fatalf("prefix of %d/%d bytes: err = %v, want ErrTruncated", i, len(m), err)
				}
			}
			if _, err := ParseClientHello(m); err != nil {
				t.Fatalf("whole message: %v", err)
			}
		})
	}
}

// TestParseClientHelloEarlyMalformed checks that a malformed hello is
// refused as soon as the bad bytes are in, before the message is complete.
func TestParseClientHelloEarlyMalformed(t *testing.T) {
	m := helloSpec{exts: []tlsExt{sniExt("a.example.test", "b.example.test"), alpnExt("h2")}}.msg()
	cut := len(m) - len(alpnExt("h2").data) - 4 // just after the server_name extension
	if _, err := ParseClientHello(m[:cut]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("prefix ending after two host_names: err = %v, want ErrMalformed", err)
	}
}

func TestParseClientHelloAllocs(t *testing.T) {
	m := helloSpec{exts: []tlsExt{sniExt("www.example.test"), alpnExt("h2", "http/1.1"), echExt()}}.msg()
	var n int
	allocs := testing.AllocsPerRun(100, func() {
		h, err := ParseClientHello(m)
		if err != nil {
			t.Fatal(err)
		}
		for p := range h.ALPN() {
			n += len(p)
		}
		if _, err := ParseClientHello(m[:len(m)-3]); err != ErrTruncated {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("ParseClientHello: %v allocs per run, want 0", allocs)
	}
	if n == 0 {
		t.Error("ALPN yielded nothing")
	}
}
