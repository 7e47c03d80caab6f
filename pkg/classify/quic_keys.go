package classify

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"fmt"
	"io"

	"golang.org/x/crypto/hkdf"
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
	initial := hkdf.Extract(sha256.New, dcid, v.salt)
	hkdfExpandLabel(clientSecret[:], initial, "client in")
	hkdfExpandLabel(key[:], clientSecret[:], v.keyLabel)
	hkdfExpandLabel(iv[:], clientSecret[:], v.ivLabel)
	hkdfExpandLabel(hp[:], clientSecret[:], v.hpLabel)
	return clientSecret, key, iv, hp
}

// hkdfExpandLabel fills out with HKDF-Expand-Label(secret, label, "",
// len(out)) of RFC 8446 section 7.1 with SHA-256:
//
//	struct {
//	    uint16 length = Length;
//	    opaque label<7..255> = "tls13 " + Label;
//	    opaque context<0..255> = Context;
//	} HkdfLabel;
//
// The labels are constants of this file and out is at most 32 bytes, so it
// cannot fail; a failure would be a bug here, not bad input.
func hkdfExpandLabel(out, secret []byte, label string) {
	const prefix = "tls13 "
	var buf [2 + 1 + len(prefix) + 16 + 1]byte
	info := append(buf[:0], byte(len(out)>>8), byte(len(out)), byte(len(prefix)+len(label)))
	info = append(info, prefix...)
	info = append(info, label...)
	info = append(info, 0) // empty context
	if _, err := io.ReadFull(hkdf.Expand(sha256.New, secret, info), out); err != nil {
		panic(fmt.Sprintf("classify: HKDF-Expand-Label %q: %v", label, err))
	}
}

// setup derives the client's Initial keys for dcid and builds the ciphers.
// This is the per-flow cost: HKDF and two AES key schedules plus a GCM
// instance, which the standard library allocates.
func (k *quicInitialKeys) setup(v *quicVersion, dcid []byte) {
	_, key, iv, hp := quicClientSecrets(v, dcid)
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
