//go:build race

package lab

// raceEnabled: the tests run with the race detector, so the egressd they
// build gets it too, and a data race in the daemon fails its test run.
const raceEnabled = true
