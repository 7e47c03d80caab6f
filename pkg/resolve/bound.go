package resolve

import "unsafe"

// MemoryBound is the cache's worst case for cacheMax names of at most
// maxAddrs addresses each (0: the defaults): every name as long as a name
// can be, every address slot in use, the index's entry for each.
func MemoryBound(cacheMax, maxAddrs int) int64 {
	if cacheMax == 0 {
		cacheMax = DefaultCacheMax
	}
	if maxAddrs == 0 {
		maxAddrs = DefaultMaxAddrs
	}
	const (
		indexEntry  = 64  // string header, int32 index, the map's control and slack
		longestName = 253 // RFC 1035 §2.3.4, in text
	)
	per := int64(unsafe.Sizeof(entry{})) + longestName + indexEntry + int64(maxAddrs)*int64(unsafe.Sizeof(cachedAddr{}))
	return int64(cacheMax) * per
}
