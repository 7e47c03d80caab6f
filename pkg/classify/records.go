package classify

import "fmt"

// TLS record layer constants (RFC 8446 §5.1).
const (
	recordHeaderLen   = 5
	contentHandshake  = 22
	maxRecordFragment = 1 << 14
)

// recordReader strips the TLS record layer off a flow head and gathers the
// handshake bytes of the first handshake message into msg, as the stream
// grows. It keeps its place, so each byte is looked at once however the
// stream arrives.
//
// While the hello is all in its first record (as every client sends a hello
// under 2^14 bytes), msg is a view of the stream and costs nothing; from a
// second record on, msg is gathered in a buffer of its own.
type recordReader struct {
	pos      int     // stream offset of the next byte not yet consumed
	recEnd   int     // stream offset where the current record's fragment ends
	records  int     // record headers read
	msg      []byte  // handshake bytes so far: stream[5:pos] in the first record, else in buf
	msgTotal int     // 4 + the handshake message's length; 0 until its header is in
	buf      flowBuf // msg from the second record on
}

// feed consumes stream[r.pos:] (stream is the flow head's contiguous
// prefix, which may have moved since the last call). It returns nil once
// msg holds the whole first handshake message, ErrTruncated while it needs
// more, or the reason to deny.
func (r *recordReader) feed(stream []byte, maxBytes int) error {
	if r.records == 1 {
		r.msg = stream[recordHeaderLen:r.pos]
	}
	for {
		if r.pos < r.recEnd { // inside a fragment
			n := min(len(stream), r.recEnd) - r.pos
			if n <= 0 {
				return ErrTruncated
			}
			if r.records == 1 {
				r.msg = stream[recordHeaderLen : r.pos+n]
			} else {
				m := r.buf.grow(len(r.msg)+n, len(r.msg), maxBytes)
				r.msg = append(m[:len(r.msg)], stream[r.pos:r.pos+n]...)
			}
			r.pos += n
			if err := r.checkMessage(maxBytes); err != nil {
				return err
			}
			if r.msgTotal != 0 && len(r.msg) == r.msgTotal {
				return nil
			}
			continue
		}
		if err := r.header(stream[r.pos:min(len(stream), r.pos+recordHeaderLen)], maxBytes); err != nil {
			return err
		}
	}
}

// header checks a record header, or as much of it as is in h, and when it
// is whole enters the record.
func (r *recordReader) header(h []byte, maxBytes int) error {
	if len(h) >= 1 && h[0] != contentHandshake {
		// Only handshake records may come before the ClientHello is whole:
		// change_cipher_spec, alert or application_data here is no TLS
		// client's opening (RFC 8446 §5, §D.4 sends the compatibility CCS
		// only after the hello).
		return fmt.Errorf("%w: TLS record of content type %d before the ClientHello is complete", ErrNotTLS, h[0])
	}
	if len(h) >= 2 && h[1] != 3 {
		return fmt.Errorf("%w: record version major %d after a handshake content type", ErrNotTLS, h[1])
	}
	if len(h) >= 3 && (h[2] < 1 || h[2] > 3) {
		// RFC 8446 §5.1: legacy_record_version is 0x0303, or 0x0301 in an
		// initial ClientHello; TLS 1.0-1.2 clients send 0x0301-0x0303.
		// 0x0300 (SSL 3.0, RFC 7568) and higher values are refused.
		return fmt.Errorf("%w: TLS record version 0x03%02x", ErrMalformed, h[2])
	}
	if len(h) < recordHeaderLen {
		return ErrTruncated
	}
	n := int(h[3])<<8 | int(h[4])
	switch {
	case n == 0:
		// RFC 8446 §5.1: "Implementations MUST NOT send zero-length
		// fragments of Handshake types".
		return fmt.Errorf("%w: zero-length handshake record", ErrMalformed)
	case n > maxRecordFragment:
		// RFC 8446 §5.1: the length MUST NOT exceed 2^14.
		return fmt.Errorf("%w: TLS record of %d bytes, more than 2^14", ErrMalformed, n)
	}
	r.records++
	if r.records == 2 {
		// The hello goes on in a second record: its bytes so far move out
		// of the stream into msg's own buffer (a first record is never
		// empty, and the handshake bytes fit in the limit).
		m := r.buf.grow(len(r.msg), 0, maxBytes)
		r.msg = m[:copy(m, r.msg)]
	}
	r.pos += recordHeaderLen
	r.recEnd = r.pos + n
	return r.checkMessage(maxBytes)
}

// checkMessage learns the message's length once its header is in, and
// checks the records and the byte limit against it.
func (r *recordReader) checkMessage(maxBytes int) error {
	if r.msgTotal == 0 && len(r.msg) >= 4 {
		r.msgTotal = 4 + (int(r.msg[1])<<16 | int(r.msg[2])<<8 | int(r.msg[3]))
	}
	if r.msgTotal == 0 {
		return nil
	}
	// The current record may not run past the hello: the client has
	// nothing else to send in plaintext before the server answers, and
	// bytes after the hello in its record would be read by the server as
	// another handshake message that the filter never saw.
	if extra := len(r.msg) + (r.recEnd - r.pos) - r.msgTotal; extra > 0 {
		return fmt.Errorf("%w: %d bytes after the ClientHello in its record", ErrMalformed, extra)
	}
	// The hello cannot end before r.pos + the bytes it still needs.
	if need := r.pos + r.msgTotal - len(r.msg); need > maxBytes {
		return fmt.Errorf("%w: the ClientHello ends at byte %d, past %d", ErrLimit, need, maxBytes)
	}
	return nil
}

// release returns msg's buffer; msg goes with it.
func (r *recordReader) release() {
	r.buf.release()
	r.msg = nil
}
