#!/usr/bin/env bash
# gotest.sh — run `go test` and report it readably; under CI=true a skipped
# test fails the run.
#
# Usage: scripts/gotest.sh [go test flags] [packages]
#
# Tests that need root, iptables or network namespaces skip with a reason
# when they cannot run. CI runs as root with every package installed, so a
# skip there means a broken test or a missing install step: testreport turns
# it into a failure when CI=true. Output of failed and skipped tests is
# printed; passing tests are summarised per package.
set -euo pipefail

cd "$(dirname "$0")/.."
go build -o bin/testreport ./internal/tools/testreport
go test -json "$@" | bin/testreport
