// Package engine is egressd's verdict engine: it takes the decoded first
// packets of new flows, keeps each undecided flow in a bounded table with
// one explicit state machine (flow.go), reads the flow's head with
// pkg/classify, decides with pkg/decide (the one decision procedure the
// daemon, replay and explain share), verifies names against DNS off the
// packet path, and gives every flow exactly one verdict, which reaches the
// kernel through a Sink: on the packets it holds, or, when it holds none,
// on the connection itself.
//
// The engine is free of sockets: pkg/nfq feeds it from NFQUEUE and is its
// Sink in the daemon; `egressd replay` feeds it from a capture.
//
// What it refuses: a flow it cannot decide within its limits (bytes of
// flow head, time, flows in the table, packets held per flow) is denied
// with reason "limit" or "incomplete", never let through; a flow the
// policy decides on its first packet is decided before any limit is
// consulted. IP fragments and packets it cannot decode are not flows.
package engine
