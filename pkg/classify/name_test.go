package classify

import (
	"errors"
	"strings"
	"testing"
)

func TestAppendName(t *testing.T) {
	l63 := strings.Repeat("b", 63)
	// Three 63-octet labels and one of 61, with the dots: exactly 253 octets.
	n253 := strings.Repeat("a", 63) + "." + strings.Repeat("a", 63) + "." + strings.Repeat("a", 63) + "." + strings.Repeat("a", 61)
	tests := []struct {
		in      string
		want    string
		wantErr bool
		ip      bool
	}{
		{in: "example.test", want: "example.test"},
		{in: "Example.TEST", want: "example.test"},
		{in: "example.test.", want: "example.test"},
		{in: "_acme-challenge.x-1.example.test", want: "_acme-challenge.x-1.example.test"},
		{in: "-leading-hyphen.test", want: "-leading-hyphen.test"},
		{in: "xn--bcher-kva.test", want: "xn--bcher-kva.test"},
		{in: "localhost", want: "localhost"},
		{in: "1.example.test", want: "1.example.test"},
		{in: "example.0xg", want: "example.0xg"},
		{in: l63 + ".test", want: l63 + ".test"},
		{in: n253, want: n253},
		{in: n253 + ".", want: n253},
		{in: n253 + "a", wantErr: true},
		{in: l63 + "b.test", wantErr: true},
		{in: "", wantErr: true},
		{in: ".", wantErr: true},
		{in: "..", wantErr: true},
		{in: "example.test..", wantErr: true},
		{in: ".example.test", wantErr: true},
		{in: "a..test", wantErr: true},
		{in: "a b.test", wantErr: true},
		{in: "a\x00.test", wantErr: true},
		{in: "a*.test", wantErr: true},
		{in: "a:443", wantErr: true},
		{in: "bücher.test", wantErr: true},
		{in: "192.0.2.1", wantErr: true, ip: true},
		{in: "192.0.2.1.", wantErr: true, ip: true},
		{in: "127.1", wantErr: true, ip: true},
		{in: "2130706433", wantErr: true, ip: true},
		{in: "0x7f.0x1", wantErr: true, ip: true},
		{in: "example.0X7F", wantErr: true, ip: true},
		{in: "[2001:db8::1]", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			buf := make([]byte, 0, MaxNameLen)
			got, err := AppendName(buf, []byte(tt.in))
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("AppendName(%q) = %q, %v; want ErrMalformed", tt.in, got, err)
				}
				if isIPLiteral(err) != tt.ip {
					t.Errorf("isIPLiteral = %v, want %v (err %v)", !tt.ip, tt.ip, err)
				}
				if len(got) != 0 {
					t.Errorf("dst grew to %q on error", got)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("AppendName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestAppendNameAppends(t *testing.T) {
	got, err := AppendName([]byte("x:"), []byte("A.Test."))
	if err != nil || string(got) != "x:a.test" {
		t.Fatalf("AppendName = %q, %v; want \"x:a.test\"", got, err)
	}
	got, err = AppendName([]byte("x:"), []byte("a..test"))
	if err == nil || string(got) != "x:" {
		t.Fatalf("AppendName on error = %q, %v; want \"x:\" and an error", got, err)
	}
}

func TestAppendNameAllocs(t *testing.T) {
	buf := make([]byte, 0, MaxNameLen)
	in := []byte("WWW.Example.Test.")
	if a := testing.AllocsPerRun(100, func() {
		if _, err := AppendName(buf, in); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("AppendName: %v allocs per run, want 0", a)
	}
}
