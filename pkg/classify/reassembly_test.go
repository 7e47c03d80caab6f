package classify

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReassembler(t *testing.T) {
	stream := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	type add struct {
		off int
		b   string // empty: the stream's own bytes for [off, off+n)
		n   int
	}
	tests := []struct {
		name       string
		adds       []add
		wantSpans  []span
		wantContig int
		wantErr    error
	}{
		{name: "in order", adds: []add{{off: 0, n: 5}, {off: 5, n: 5}}, wantSpans: []span{{0, 10}}, wantContig: 10},
		{name: "reverse", adds: []add{{off: 5, n: 5}, {off: 0, n: 5}}, wantSpans: []span{{0, 10}}, wantContig: 10},
		{name: "hole", adds: []add{{off: 0, n: 3}, {off: 5, n: 2}}, wantSpans: []span{{0, 3}, {5, 7}}, wantContig: 3},
		{name: "filling a hole merges three", adds: []add{{off: 0, n: 3}, {off: 5, n: 2}, {off: 10, n: 2}, {off: 2, n: 9}}, wantSpans: []span{{0, 12}}, wantContig: 12},
		{name: "duplicate", adds: []add{{off: 4, n: 4}, {off: 4, n: 4}}, wantSpans: []span{{4, 8}}},
		{name: "superset", adds: []add{{off: 4, n: 2}, {off: 8, n: 2}, {off: 1, n: 20}}, wantSpans: []span{{1, 21}}},
		{name: "inside", adds: []add{{off: 0, n: 20}, {off: 3, n: 2}}, wantSpans: []span{{0, 20}}, wantContig: 20},
		{name: "conflict", adds: []add{{off: 0, n: 10}, {off: 8, b: "8X"}}, wantErr: ErrMalformed},
		{name: "conflict with a later span", adds: []add{{off: 8, n: 4}, {off: 0, b: "012345678Xab"}}, wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r reassembler
			r.reset(len(stream))
			defer r.release()
			var err error
			for _, a := range tt.adds {
				b := []byte(a.b)
				if a.b == "" {
					b = stream[a.off : a.off+a.n]
				}
				if err = r.add(a.off, b); err != nil {
					break
				}
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tt.wantSpans, r.spans[:r.n], cmp.AllowUnexported(span{})); diff != "" {
				t.Errorf("spans (-want +got):\n%s", diff)
			}
			if got := r.contiguous(); got != tt.wantContig {
				t.Errorf("contiguous = %d, want %d", got, tt.wantContig)
			}
			got, have := unpacked(t, &r)
			for i, h := range have {
				if h && got[i] != stream[i] {
					t.Errorf("byte %d = %q, want %q", i, got[i], stream[i])
				}
			}
		})
	}
}

// unpacked reads back what r holds at each stream offset under its limit,
// and whether it holds it, from the packed buffer span by span. It fails
// the test if the spans do not account for exactly the bytes held.
func unpacked(t testing.TB, r *reassembler) (got []byte, have []bool) {
	t.Helper()
	got, have = make([]byte, r.limit), make([]bool, r.limit)
	buf := r.buf.bytes()
	at := 0
	for _, s := range r.spans[:r.n] {
		copy(got[s.start:s.end], buf[at:at+s.len()])
		for i := s.start; i < s.end; i++ {
			have[i] = true
		}
		at += s.len()
	}
	if at != r.held {
		t.Fatalf("spans hold %d bytes, the reassembler says %d", at, r.held)
	}
	return got, have
}
