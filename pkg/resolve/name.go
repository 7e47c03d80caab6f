package resolve

import (
	"fmt"

	"github.com/egressd/egressd/internal/hostname"
)

// normalize returns name in the form the cache is keyed by: lowercase, no
// trailing dot. It allocates only when name is not already in that form.
//
// The check is egressd's one check of host names (internal/hostname), the
// one classify makes of names off the wire and policy of the names it is
// written with, so every name a policy or a flow can name can be asked,
// and nothing else: labels of [a-z0-9-_], 1 to 63 characters, 253 in all,
// and no IP literal. Anything else (a "*" wildcard, an escape, a space, a
// byte >= 0x80) is refused rather than sent, because the resolver library
// would read escapes in it and the name asked would not be the name
// checked. Punycode names are plain labels.
func normalize(name string) (string, error) {
	n, err := hostname.Normalize(name)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidName, err)
	}
	return n, nil
}
