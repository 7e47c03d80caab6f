// Package inetsum computes the Internet checksum (RFC 1071) of IPv4
// headers and of TCP and UDP segments with their pseudo-header (RFC 793
// section 3.1, RFC 768).
package inetsum

// Sum adds b to a running one's-complement sum and folds it to 16 bits. A
// header or segment is valid when Sum over it (and its pseudo-header) is
// 0xffff; the checksum to write is ^Sum with the field zeroed.
func Sum(b []byte, sum uint32) uint16 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// Pseudo is the IPv4 pseudo-header's sum for a segment of n bytes of
// protocol proto between src and dst, to start Sum with.
func Pseudo(src, dst [4]byte, proto uint8, n int) uint32 {
	var total uint32
	for i := 0; i < 4; i += 2 {
		total += uint32(src[i])<<8 | uint32(src[i+1])
		total += uint32(dst[i])<<8 | uint32(dst[i+1])
	}
	return total + uint32(proto) + uint32(n)
}
