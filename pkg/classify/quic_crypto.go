package classify

import "fmt"

// quicMaxStreamOffset is the largest offset plus length a stream may reach
// (RFC 9000 section 19.6: 2^62-1).
const quicMaxStreamOffset = 1<<62 - 1

// quicMaxPacket is the limit the scratch buffer for a packet being
// decrypted grows under: a UDP payload is at most 65,527 bytes. The buffer
// is taken per datagram and returned after it, so a flow holds none between
// datagrams.
const quicMaxPacket = 1 << 16

// quicCryptoStream reassembles the client's Initial CRYPTO stream from
// CRYPTO frames that may arrive in any order, overlap and repeat, across
// packets and datagrams (RFC 9000 sections 19.6 and 7.5).
//
// Overlapping data must agree byte for byte: a server keeps one copy (which
// one is up to its implementation), so two different versions of the same
// bytes would let the client show egressd one ClientHello and the server
// another. A disagreement is ErrMalformed.
type quicCryptoStream struct{ reassembler }

// add stores data at stream offset off. It returns ErrLimit when the data
// reaches past the byte limit or would leave too many holes, and
// ErrMalformed when it disagrees with bytes already received or passes the
// largest stream offset QUIC allows.
func (s *quicCryptoStream) add(off uint64, data []byte) error {
	end := off + uint64(len(data))
	if end > quicMaxStreamOffset {
		// RFC 9000 section 19.6: FRAME_ENCODING_ERROR or CRYPTO_BUFFER_EXCEEDED.
		return fmt.Errorf("CRYPTO frame ends at offset %d, past 2^62-1: %w", end, ErrMalformed)
	}
	if end > uint64(s.limit) {
		return fmt.Errorf("CRYPTO data up to offset %d, limit %d: %w", end, s.limit, ErrLimit)
	}
	if err := s.reassembler.add(int(off), data); err != nil {
		return fmt.Errorf("CRYPTO data: %w", err)
	}
	return nil
}
