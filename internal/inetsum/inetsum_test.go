package inetsum

import (
	"encoding/hex"
	"testing"
)

// TestSum checks the header of RFC 1071 section 3's worked example style
// against a known IPv4 header: a captured header whose checksum field
// (0xb861) verifies.
func TestSum(t *testing.T) {
	h, _ := hex.DecodeString("450000730000400040110000c0a80001c0a800c7")
	if got := ^Sum(h, 0); got != 0xb861 {
		t.Fatalf("checksum %#04x, want 0xb861", got)
	}
	h[10], h[11] = 0xb8, 0x61
	if Sum(h, 0) != 0xffff {
		t.Fatal("a header with its checksum does not sum to 0xffff")
	}
	// An odd length pads with a zero byte.
	if Sum([]byte{0x01}, 0) != 0x0100 {
		t.Fatal("odd byte")
	}
}
