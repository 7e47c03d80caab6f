package hostname

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	l63 := strings.Repeat("b", 63)
	// Three labels of 63 octets and one of 61, with the dots: 253 octets.
	n253 := strings.Repeat("a", 63) + "." + strings.Repeat("a", 63) + "." + strings.Repeat("a", 63) + "." + strings.Repeat("a", 61)
	tests := []struct {
		in      string
		want    string  // the normal form, if accepted
		problem Problem // else why not
		part    string  // and the part of the input it is about
	}{
		{in: "example.test", want: "example.test"},
		{in: "Example.TEST", want: "example.test"},
		{in: "example.test.", want: "example.test"},
		{in: "_acme-challenge.x-1.example.test", want: "_acme-challenge.x-1.example.test"},
		{in: "-leading-hyphen.test", want: "-leading-hyphen.test"},
		{in: "trailing-.test", want: "trailing-.test"},
		{in: "xn--bcher-kva.test", want: "xn--bcher-kva.test"},
		{in: "xn--zz--.test", want: "xn--zz--.test"}, // not punycode, still a label
		{in: "localhost", want: "localhost"},
		{in: "1.example.test", want: "1.example.test"},
		{in: "example.0xg", want: "example.0xg"},
		{in: "example.1a", want: "example.1a"},
		{in: l63 + ".test", want: l63 + ".test"},
		{in: n253, want: n253},
		{in: n253 + ".", want: n253},

		{in: "", problem: Empty},
		{in: ".", problem: Empty},
		{in: n253 + "a", problem: TooLong, part: n253 + "a"},
		{in: l63 + "b.test", problem: LabelTooLong, part: l63 + "b"},
		{in: "x." + l63 + "bb", problem: LabelTooLong, part: l63 + "bb"},
		{in: "..", problem: EmptyLabel},
		{in: "example.test..", problem: EmptyLabel},
		{in: ".example.test", problem: EmptyLabel},
		{in: "a..test", problem: EmptyLabel},
		{in: "a b.test", problem: BadByte, part: " "},
		{in: "a\x00.test", problem: BadByte, part: "\x00"},
		{in: "a*.test", problem: BadByte, part: "*"},
		{in: "*.test", problem: BadByte, part: "*"},
		{in: "a:443", problem: BadByte, part: ":"},
		{in: "a%41.test", problem: BadByte, part: "%"},
		{in: `a\046b.test`, problem: BadByte, part: `\`},
		{in: "bücher.test", problem: BadByte, part: "\xc3"},
		{in: "[2001:db8::1]", problem: BadByte, part: "["},
		{in: "192.0.2.1", problem: IPLiteral, part: "1"},
		{in: "192.0.2.1.", problem: IPLiteral, part: "1"},
		{in: "127.1", problem: IPLiteral, part: "1"},
		{in: "2130706433", problem: IPLiteral, part: "2130706433"},
		{in: "0x7f.0x1", problem: IPLiteral, part: "0x1"},
		{in: "example.0X7F", problem: IPLiteral, part: "0X7F"},
		{in: "example.123", problem: IPLiteral, part: "123"},
		{in: "example.0x", problem: IPLiteral, part: "0x"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Normalize(tt.in)
			app, appErr := Append([]byte("x:"), []byte(tt.in))
			if p := Check([]byte(tt.in)); p != tt.problem {
				t.Errorf("Check = %v, want %v", p, tt.problem)
			}
			if tt.problem == OK {
				if err != nil || got != tt.want {
					t.Fatalf("Normalize = %q, %v; want %q", got, err, tt.want)
				}
				if appErr != nil || string(app) != "x:"+tt.want {
					t.Fatalf("Append = %q, %v; want %q", app, appErr, "x:"+tt.want)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, tt.problem) || e.Name != tt.in {
				t.Fatalf("Normalize = %q, %v; want an *Error for %q, %v", got, err, tt.in, tt.problem)
			}
			if part := e.Name[e.At:e.End]; tt.part != "" && part != tt.part {
				t.Errorf("the error is about %q, want %q", part, tt.part)
			}
			if string(app) != "x:" || !errors.Is(appErr, tt.problem) || appErr.Error() != err.Error() {
				t.Errorf("Append = %q, %v; want dst unchanged and %v", app, appErr, err)
			}
		})
	}
}

func TestErrorLabel(t *testing.T) {
	for _, tt := range []struct{ in, label string }{
		{"exa mple.com", "exa mple"},
		{"a.b!c.d", "b!c"},
		{"a.bc!", "bc!"},
		{"!", "!"},
	} {
		_, err := Normalize(tt.in)
		var e *Error
		if !errors.As(err, &e) || e.Label() != tt.label {
			t.Errorf("Normalize(%q): %v, label %q; want the label %q", tt.in, err, e.Label(), tt.label)
		}
	}
}

func TestAllocs(t *testing.T) {
	buf := make([]byte, 0, MaxLen)
	in := []byte("WWW.Example.Test.")
	if a := testing.AllocsPerRun(100, func() {
		if _, err := Append(buf, in); err != nil {
			t.Fatal(err)
		}
		if Check([]byte("198.18.0.1")) != IPLiteral { // no allocation for the "no name" of an HTTP Host
			t.Fatal("not an IP literal")
		}
		if _, err := Normalize("www.example.test"); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("%v allocs per run, want 0", a)
	}
}

// FuzzNormalize checks the three entry points against each other and the
// normal form against its definition: accepted names come back lowercased
// less one trailing dot, in allowed bytes and limits, and normal forms are
// fixed points.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		"example.test", "WWW.Example.Test.", "a..b", "192.0.2.1", "example.0x7f",
		"_srv.-x-.test", "bücher.test", strings.Repeat("a.", 127), strings.Repeat("a", 64),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Normalize(s)
		app, appErr := Append(nil, []byte(s))
		p := Check([]byte(s))
		if (err == nil) != (appErr == nil) || (err == nil) != (p == OK) {
			t.Fatalf("Normalize %v, Append %v, Check %v disagree", err, appErr, p)
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Problem != p || e.At < 0 || e.At > e.End || e.End > len(s) {
				t.Fatalf("Normalize(%q): %#v, Check %v", s, err, p)
			}
			return
		}
		if string(app) != got || got != strings.ToLower(strings.TrimSuffix(s, ".")) {
			t.Fatalf("Normalize(%q) = %q, Append %q", s, got, app)
		}
		if len(got) == 0 || len(got) > MaxLen || bytes.ContainsFunc([]byte(got), func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
		}) {
			t.Fatalf("Normalize(%q) = %q: not a normal form", s, got)
		}
		if again, err := Normalize(got); err != nil || again != got {
			t.Fatalf("Normalize(%q) = %q, %v; a normal form is its own", got, again, err)
		}
	})
}
