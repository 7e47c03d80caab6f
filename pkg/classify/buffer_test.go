package classify

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFlowBufGrow(t *testing.T) {
	tests := []struct {
		name     string
		n, limit int
		want     int
	}{
		{"one byte", 1, DefaultMaxBytes, 512},
		{"smallest class exactly", 512, DefaultMaxBytes, 512},
		{"one over a class", 513, DefaultMaxBytes, 1024},
		{"the limit, a class size", DefaultMaxBytes, DefaultMaxBytes, DefaultMaxBytes},
		{"a limit under the smallest class", 100, 300, 300},
		{"a limit that is no class size", 9000, 10000, 10000},
		{"the class under such a limit", 5000, 10000, 8192},
		{"more than the limit", 700, 600, 700},
		{"the largest class", maxPooledBuf, maxMaxBytes, maxPooledBuf},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			emptyPools()
			var b flowBuf
			defer b.release()
			if got := len(b.grow(tt.n, 0, tt.limit)); got != tt.want || b.capacity() != tt.want {
				t.Fatalf("grow(%d, limit %d): %d bytes, capacity %d; want %d", tt.n, tt.limit, got, b.capacity(), tt.want)
			}
			// From the pool, the same class again.
			b.release()
			if got := len(b.grow(tt.n, 0, tt.limit)); got != tt.want {
				t.Errorf("grow again from the pool: %d bytes, want %d", got, tt.want)
			}
		})
	}
}

func TestFlowBufKeeps(t *testing.T) {
	var b flowBuf
	defer b.release()
	copy(b.grow(10, 0, DefaultMaxBytes), "0123456789")
	if got := b.grow(500, 10, DefaultMaxBytes); len(got) != 512 || string(got[:10]) != "0123456789" {
		t.Fatalf("grow within the class: %d bytes, %q", len(got), got[:10])
	}
	got := b.grow(3000, 10, DefaultMaxBytes)
	if len(got) != 4096 || string(got[:10]) != "0123456789" {
		t.Fatalf("grow over two classes: %d bytes, %q; want 4096 starting with the bytes kept", len(got), got[:10])
	}
}

// TestReassemblerGrowth adds out-of-order data whose overlaps cross size
// classes: the buffer holds the bytes received (packed, holes left out),
// grows a class at a time, and a conflict that would have grown it leaves
// everything as it was.
func TestReassemblerGrowth(t *testing.T) {
	const limit = 4096
	stream := make([]byte, limit)
	for i := range stream {
		stream[i] = byte(i*7 + i>>8)
	}
	type step struct {
		name     string
		off, end int
		change   int // stream offset of a byte changed in the data; -1 for none
		wantErr  error
		wantCap  int
		wantHeld int
		spans    []span
	}
	steps := []step{
		{"far ahead first", 3000, 3100, -1, nil, 512, 100, []span{{3000, 3100}}},
		{"the start", 0, 400, -1, nil, 512, 500, []span{{0, 400}, {3000, 3100}}},
		{"overlap over 512 held", 300, 700, -1, nil, 1024, 800, []span{{0, 700}, {3000, 3100}}},
		{"adjacent below the far span, over 1024", 2000, 3000, -1, nil, 2048, 1800, []span{{0, 700}, {2000, 3100}}},
		{"conflict in an overlap that would grow to 4096", 600, 2100, 2050, ErrMalformed, 2048, 1800, []span{{0, 700}, {2000, 3100}}},
		{"conflict at the first overlapping byte", 650, 2050, 650, ErrMalformed, 2048, 1800, []span{{0, 700}, {2000, 3100}}},
		{"hole filled with overlaps at both ends", 650, 2050, -1, nil, 4096, 3100, []span{{0, 3100}}},
		{"up to the limit exactly", 3100, limit, -1, nil, 4096, limit, []span{{0, limit}}},
		{"one byte past the limit", limit - 1, limit + 1, -1, ErrLimit, 4096, limit, []span{{0, limit}}},
	}
	emptyPools() // for the capacities to be the classes'
	var r reassembler
	r.reset(limit)
	defer r.release()
	for _, s := range steps {
		data := make([]byte, s.end-s.off)
		copy(data, stream[s.off:min(s.end, limit)])
		if s.change >= 0 {
			data[s.change-s.off] ^= 0xff
		}
		err := r.add(s.off, data)
		if !errors.Is(err, s.wantErr) || (err == nil) != (s.wantErr == nil) {
			t.Fatalf("%s: add [%d, %d) = %v, want %v", s.name, s.off, s.end, err, s.wantErr)
		}
		if r.capacity() != s.wantCap || r.held != s.wantHeld {
			t.Errorf("%s: capacity %d, held %d; want %d, %d", s.name, r.capacity(), r.held, s.wantCap, s.wantHeld)
		}
		if diff := cmp.Diff(s.spans, r.spans[:r.n], cmp.AllowUnexported(span{})); diff != "" {
			t.Errorf("%s: spans (-want +got):\n%s", s.name, diff)
		}
		got, have := unpacked(t, &r)
		for i, h := range have {
			if h && got[i] != stream[i] {
				t.Fatalf("%s: byte %d = %#x, want %#x", s.name, i, got[i], stream[i])
			}
		}
	}
	if !bytes.Equal(r.prefix(), stream) {
		t.Error("the whole stream is not the prefix")
	}
}

// TestReassemblerPermutedGrowth reassembles a stream that crosses every
// class from 512 to 16384 bytes from shuffled pieces with retransmissions
// and repacketised copies, and checks the result and the buffer's size.
func TestReassemblerPermutedGrowth(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 3))
	stream := make([]byte, 12000)
	for i := range stream {
		stream[i] = byte(rng.Uint32())
	}
	var r reassembler
	defer r.release()
	for trial := range 100 {
		r.reset(DefaultMaxBytes)
		for _, sg := range permuted(rng, stream) {
			off := int(sg.seq - (testISN + 1))
			if err := r.add(off, sg.payload); err != nil {
				t.Fatalf("trial %d: add at %d: %v", trial, off, err)
			}
			if c := r.capacity(); !capacityFits(c, r.held, DefaultMaxBytes) {
				t.Fatalf("trial %d: capacity %d for %d bytes held", trial, c, r.held)
			}
		}
		if !bytes.Equal(r.prefix(), stream) {
			t.Fatalf("trial %d: reassembled stream differs", trial)
		}
	}
}

// capacityFits reports whether c is a buffer size that may hold n bytes
// under limit: at least n, at most n's class and the limit. (It is n's
// class exactly unless a test of another limit left a buffer of its top
// size in that class's pool.)
func capacityFits(c, n, limit int) bool {
	return c >= n && c <= min(minBufSize<<bufClass(n), max(limit, n))
}

// emptyPools drops every pooled buffer, so that the next grows take
// buffers of their class's size rather than one another test left.
func emptyPools() {
	for k := range bufPools {
		for bufPools[k].Get() != nil {
		}
	}
}
