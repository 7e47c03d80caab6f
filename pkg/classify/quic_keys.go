package classify

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"fmt"
	"hash"
)

// quicVersion holds what differs between the QUIC versions for a client's
// Initial packets: the version number, the salt, the key labels and the
// long-header packet type codes.
type quicVersion struct {
	number   uint32
	salt     []byte
	keyLabel string // "quic key" (v1) or "quicv2 key" (v2)
	ivLabel  string
	hpLabel  string
	// Long-header packet types (first byte bits 0x30, shifted down).
	initial, zeroRTT, handshake, retry byte
}

var (
	// RFC 9000 section 17.2 (type codes), RFC 9001 section 5.2 (salt) and
	// sections 5.1 and 5.4 (labels).
	quicV1 = quicVersion{
		number: 0x00000001,
		salt: []byte{
			0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17,
			0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a,
		},
		keyLabel: "quic key", ivLabel: "quic iv", hpLabel: "quic hp",
		initial: 0, zeroRTT: 1, handshake: 2, retry: 3,
	}
	// RFC 9369 section 3.1 (version), 3.2 (type codes), 3.3.1 (salt) and
	// 3.3.2 (labels).
	quicV2 = quicVersion{
		number: 0x6b3343cf,
		salt: []byte{
			0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93,
			0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9, 0xbd, 0x2e, 0xd9,
		},
		keyLabel: "quicv2 key", ivLabel: "quicv2 iv", hpLabel: "quicv2 hp",
		initial: 1, zeroRTT: 2, handshake: 3, retry: 0,
	}
)

// lookupQUICVersion returns the version with that number, or nil when this
// reader does not know it.
func lookupQUICVersion(n uint32) *quicVersion {
	switch n {
	case quicV1.number:
		return &quicV1
	case quicV2.number:
		return &quicV2
	}
	return nil
}

// Initial packets use AEAD_AES_128_GCM with a 16-byte key, a 12-byte IV and
// AES-128 header protection (RFC 9001 sections 5.2, 5.3, 5.4.3).
const (
	quicKeyLen    = 16
	quicIVLen     = 12
	quicTagLen    = 16
	quicSampleLen = 16
)

// quicInitialKeys are the client's Initial packet protection keys.
type quicInitialKeys struct {
	aead cipher.AEAD  // AES-128-GCM with the "quic key"
	hp   cipher.Block // AES-128 with the "quic hp" key
	iv   [quicIVLen]byte
	mac  hmacSHA256 // HKDF's state, kept across flows
}

// quicClientSecrets derives the client's Initial secrets from the client's
// first Destination Connection ID (RFC 9001 section 5.2):
//
//	initial_secret = HKDF-Extract(initial_salt, client_dst_connection_id)
//	client_initial_secret = HKDF-Expand-Label(initial_secret, "client in", "", 32)
//
// and from it the key, IV and header-protection key (sections 5.1, 5.4).
// The values are returned for the tests, which check them against the
// RFCs' intermediate values.
func quicClientSecrets(v *quicVersion, dcid []byte) (clientSecret [32]byte, key [quicKeyLen]byte, iv [quicIVLen]byte, hp [quicKeyLen]byte) {
	var h hmacSHA256
	return h.clientSecrets(v, dcid)
}

func (h *hmacSHA256) clientSecrets(v *quicVersion, dcid []byte) (clientSecret [32]byte, key [quicKeyLen]byte, iv [quicIVLen]byte, hp [quicKeyLen]byte) {
	initial := h.sum(v.salt, dcid, nil) // HKDF-Extract: HMAC(salt, IKM) (RFC 5869 section 2.2)
	h.expandLabel(clientSecret[:], initial[:], "client in")
	h.expandLabel(key[:], clientSecret[:], v.keyLabel)
	h.expandLabel(iv[:], clientSecret[:], v.ivLabel)
	h.expandLabel(hp[:], clientSecret[:], v.hpLabel)
	return clientSecret, key, iv, hp
}

// hmacSHA256 is HMAC-SHA-256 (RFC 2104) over one SHA-256 state that is
// reset for every use, so that a flow's key derivation allocates nothing
// once the state exists: crypto/hmac and crypto/hkdf build a new HMAC,
// with two new hash states, for every key, which was 46 of a QUIC flow's
// allocations. Keys here are at most a block (the salts, a 32-byte
// secret), which HMAC uses as they are, zero-padded.
type hmacSHA256 struct {
	h hash.Hash
	// Scratch, here rather than on the stack: what goes through the
	// hash.Hash interface would escape, one allocation each.
	pad   [sha256.BlockSize]byte
	inner [sha256.Size]byte
	out   [sha256.Size]byte
	info  [2 + 1 + 6 + 16 + 1 + 1]byte
}

// sum returns HMAC(key, a || b).
func (m *hmacSHA256) sum(key, a, b []byte) [sha256.Size]byte {
	if m.h == nil {
		m.h = sha256.New()
	}
	if len(key) > sha256.BlockSize {
		panic("classify: HMAC key longer than a block") // the keys are constants and secrets of this file
	}
	m.keyPad(key, 0x36)
	m.h.Reset()
	m.h.Write(m.pad[:])
	m.h.Write(a)
	m.h.Write(b)
	m.h.Sum(m.inner[:0])
	m.keyPad(key, 0x5c)
	m.h.Reset()
	m.h.Write(m.pad[:])
	m.h.Write(m.inner[:])
	m.h.Sum(m.out[:0])
	return m.out
}

func (m *hmacSHA256) keyPad(key []byte, pad byte) {
	for i := range m.pad {
		m.pad[i] = pad
	}
	for i, c := range key {
		m.pad[i] ^= c
	}
}

// expandLabel fills out with HKDF-Expand-Label(secret, label, "",
// len(out)) of RFC 8446 section 7.1 with SHA-256:
//
//	struct {
//	    uint16 length = Length;
//	    opaque label<7..255> = "tls13 " + Label;
//	    opaque context<0..255> = Context;
//	} HkdfLabel;
//
// out is at most 32 bytes, so HKDF-Expand (RFC 5869 section 2.3) is its
// first block alone: T(1) = HMAC(secret, HkdfLabel || 0x01).
func (m *hmacSHA256) expandLabel(out, secret []byte, label string) {
	const prefix = "tls13 "
	if len(out) > sha256.Size {
		panic("classify: HKDF-Expand-Label longer than a block") // the lengths are constants of this file
	}
	if len(label) > 16 {
		panic("classify: HKDF-Expand-Label label longer than 16 bytes") // the labels are constants of this file
	}
	info := append(m.info[:0], byte(len(out)>>8), byte(len(out)), byte(len(prefix)+len(label)))
	info = append(info, prefix...)
	info = append(info, label...)
	info = append(info, 0, 1) // empty context; the block counter
	t := m.sum(secret, info, nil)
	copy(out, t[:])
}

// setup derives the client's Initial keys for dcid and builds the ciphers.
// This is the per-flow cost: HKDF (on the flow's reused HMAC state, no
// allocation) and two AES key schedules plus a GCM instance, which the
// standard library allocates (it has no way to key a cipher again).
func (k *quicInitialKeys) setup(v *quicVersion, dcid []byte) {
	_, key, iv, hp := k.mac.clientSecrets(v, dcid)
	k.aead = newAESGCM(key[:])
	block, err := aes.NewCipher(hp[:])
	if err != nil {
		panic(fmt.Sprintf("classify: AES header protection key: %v", err))
	}
	k.hp = block
	k.iv = iv
}

func newAESGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(fmt.Sprintf("classify: AES packet key: %v", err))
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(fmt.Sprintf("classify: AES-GCM: %v", err))
	}
	return aead
}

// clear drops the keys; the HMAC state stays for the next flow.
func (k *quicInitialKeys) clear() {
	k.aead, k.hp, k.iv = nil, nil, [quicIVLen]byte{}
}
