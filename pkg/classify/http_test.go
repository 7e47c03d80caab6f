package classify

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type headView struct {
	Len            int
	Method, Target string
	Minor          uint8
	Host           bool
	Name           string
}

func TestParseRequestHead(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    headView
		wantErr error
	}{
		{name: "origin-form", in: "GET /a?b HTTP/1.1\r\nHost: A.Example.Test\r\n\r\nrest",
			want: headView{Len: 43, Method: "GET", Target: "/a?b", Minor: 1, Host: true, Name: "a.example.test"}},
		{name: "HTTP/1.0 no Host", in: "HEAD / HTTP/1.0\r\n\r\n",
			want: headView{Len: 19, Method: "HEAD", Target: "/"}},
		{name: "absolute-form, no Host", in: "GET http://b.example.test/ HTTP/1.0\r\n\r\n",
			want: headView{Len: 39, Method: "GET", Target: "http://b.example.test/", Name: "b.example.test"}},
		{name: "truncated", in: "GET / HTTP/1.1\r\nHost: a.example.test\r\n", wantErr: ErrTruncated},
		{name: "not http", in: "\x16\x03\x01", wantErr: ErrNotTLS},
		{name: "LF only", in: "GET / HTTP/1.1\n", wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRequestHead([]byte(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			got := headView{r.Len, string(r.Method), string(r.Target), r.Minor, r.Host, string(r.Name())}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseRequestHeadPrefixes checks that every strict prefix of a valid
// head is ErrTruncated.
func TestParseRequestHeadPrefixes(t *testing.T) {
	for _, h := range []string{
		"GET http://a.example.test:8080/x HTTP/1.1\r\nHost: a.example.test:8080\r\nX: y\r\n\r\n",
		"CONNECT c.example.test:443 HTTP/1.1\r\nHost: c.example.test:443\r\n\r\n",
		"OPTIONS * HTTP/1.0\r\n\r\n",
	} {
		for i := range len(h) {
			if _, err := ParseRequestHead([]byte(h[:i])); err != ErrTruncated {
				t.Fatalf("%q: err = %v, want ErrTruncated", h[:i], err)
			}
		}
		if _, err := ParseRequestHead([]byte(h)); err != nil {
			t.Fatalf("%q: %v", h, err)
		}
	}
}

func TestParseRequestHeadAllocs(t *testing.T) {
	h := []byte("GET http://a.example.test/x HTTP/1.1\r\nHost: A.example.test\r\nAccept: */*\r\n\r\n")
	if a := testing.AllocsPerRun(100, func() {
		if _, err := ParseRequestHead(h); err != nil {
			t.Fatal(err)
		}
		if _, err := ParseRequestHead(h[:len(h)-1]); err != ErrTruncated {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("ParseRequestHead: %v allocs per run, want 0", a)
	}
}

// TestMethodLetters checks that the first-byte decision and the method
// list agree: every method starts with an HTTP letter, and every HTTP
// letter starts a method.
func TestMethodLetters(t *testing.T) {
	starts := map[byte]bool{}
	for _, m := range methods {
		starts[m[0]] = true
		if len(m) > maxMethodLen {
			t.Errorf("%s is longer than maxMethodLen %d", m, maxMethodLen)
		}
	}
	for c := range 256 {
		if got := firstByteKind(byte(c)) == kindHTTP; got != starts[byte(c)] {
			t.Errorf("byte %q: firstByteKind says HTTP %v, methods say %v", rune(c), got, starts[byte(c)])
		}
	}
}
