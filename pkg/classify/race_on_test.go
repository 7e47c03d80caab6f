//go:build race

package classify

// raceEnabled: under the race detector sync.Pool drops a quarter of the
// buffers put back, at random, so a warm pool still misses and the tests
// of allocation-free pooling cannot hold. They skip; go test without
// -race runs them.
const raceEnabled = true
