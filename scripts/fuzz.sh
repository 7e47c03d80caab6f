#!/usr/bin/env bash
# fuzz.sh — run every Go fuzz target of the module for a fixed time each.
#
# Usage: scripts/fuzz.sh [FUZZTIME]   (default 30s; any `go test -fuzztime` value)
#
# Targets are found with `go test -list '^Fuzz'`, so a new FuzzXxx is picked
# up without editing this file. New crashers land in the package's
# testdata/fuzz/ directory, where `go test` replays them from then on.
set -euo pipefail

cd "$(dirname "$0")/.."
fuzztime="${1:-30s}"
status=0
while read -r pkg; do
	while read -r target; do
		[[ "$target" == Fuzz* ]] || continue
		echo "== $pkg $target ($fuzztime)"
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"; then
			status=1
		fi
	done < <(go test -list '^Fuzz' "$pkg")
done < <(go list ./...)
exit "$status"
