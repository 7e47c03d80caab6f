package resolve

import (
	"fmt"
	"strings"
)

// RFC 1035 §2.3.4: 255 octets on the wire, which is 253 characters in
// presentation form without the trailing dot; 63 octets per label.
const (
	maxNameLen  = 253
	maxLabelLen = 63
)

// normalize returns name in the form the cache is keyed by: lowercase, no
// trailing dot. It allocates only when name is not already in that form.
//
// Only host names are accepted: labels of [a-z0-9-_] (the underscore
// because service names use it), 1 to 63 characters, 253 in all. Anything
// else (a "*" wildcard, an escape, a space, a byte >= 0x80) is refused rather
// than sent, because the resolver library would read escapes in it and the
// name asked would not be the name checked. Punycode names are plain LDH.
func normalize(name string) (string, error) {
	name = strings.TrimSuffix(name, ".")
	if hasUpper(name) {
		name = strings.ToLower(name)
	}
	if len(name) == 0 || len(name) > maxNameLen {
		return "", fmt.Errorf("%w: %q: length %d, want 1 to %d", ErrInvalidName, name, len(name), maxNameLen)
	}
	label := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if label == 0 {
				return "", fmt.Errorf("%w: %q: empty label at offset %d", ErrInvalidName, name, i)
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return "", fmt.Errorf("%w: %q: character %q at offset %d", ErrInvalidName, name, c, i)
		}
		label++
		if label > maxLabelLen {
			return "", fmt.Errorf("%w: %q: label longer than %d at offset %d", ErrInvalidName, name, maxLabelLen, i)
		}
	}
	if label == 0 {
		return "", fmt.Errorf("%w: %q: empty last label", ErrInvalidName, name)
	}
	return name, nil
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}
