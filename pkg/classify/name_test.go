package classify

import (
	"errors"
	"testing"

	"github.com/egressd/egressd/internal/hostname"
)

// TestAppendName checks what classify adds to the one name check
// (internal/hostname, where its cases are): refusals wrap ErrMalformed and
// say which problem it was, and dst is left as it was.
func TestAppendName(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    string
		problem hostname.Problem
	}{
		{in: "WWW.Example.Test.", want: "x:www.example.test"},
		{in: "-leading-hyphen.test", want: "x:-leading-hyphen.test"},
		{in: "a..test", problem: hostname.EmptyLabel},
		{in: "bücher.test", problem: hostname.BadByte},
		{in: "192.0.2.1", problem: hostname.IPLiteral},
	} {
		got, err := AppendName([]byte("x:"), []byte(tt.in))
		if tt.problem == hostname.OK {
			if err != nil || string(got) != tt.want {
				t.Errorf("AppendName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			continue
		}
		if !errors.Is(err, ErrMalformed) || !errors.Is(err, tt.problem) || string(got) != "x:" {
			t.Errorf("AppendName(%q) = %q, %v; want \"x:\" and ErrMalformed for %v", tt.in, got, err, tt.problem)
		}
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
