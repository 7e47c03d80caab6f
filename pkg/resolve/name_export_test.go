package resolve

// Normalize is normalize, for the agreement test of the name checks in
// package resolve_test.
var Normalize = normalize
