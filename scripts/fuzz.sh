#!/usr/bin/env bash
# fuzz.sh — run every Go fuzz target of the module for a fixed time each.
#
# Usage: scripts/fuzz.sh [FUZZTIME]   (default 30s; any `go test -fuzztime` value)
#
# Targets are found with `go test -list '^Fuzz'`, so a new FuzzXxx is picked
# up without editing this file. New crashers land in the package's
# testdata/fuzz/ directory, where `go test` replays them from then on.
#
# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" when -fuzztime ends while a worker is busy (go.dev/issue/75804,
# fixed in Go 1.27), most often on a loaded machine. That failure writes no
# input. A target that fails that way, and only that way, runs once more; a
# second failure of any kind fails the run. Any failure that writes an input
# to testdata/fuzz fails the run at once.
set -euo pipefail

cd "$(dirname "$0")/.."
fuzztime="${1:-30s}"
status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# inputs DIR TARGET: how many inputs the fuzzer has written for TARGET.
inputs() {
	local d="$1/testdata/fuzz/$2"
	if [[ -d "$d" ]]; then find "$d" -type f | wc -l; else echo 0; fi
}

# fuzz PKG DIR TARGET: 0 passed, 1 failed, 2 failed with the coordinator's race only.
fuzz() {
	local before
	before=$(inputs "$2" "$3")
	# pipefail: the pipeline fails when go test does.
	if go test -run '^$' -fuzz "^${3}\$" -fuzztime "$fuzztime" "$1" 2>&1 | tee "$log"; then
		return 0
	fi
	if [[ "$(inputs "$2" "$3")" == "$before" ]] &&
		grep -qx '    context deadline exceeded' "$log" &&
		! grep -q -e 'Failing input written' -e '^panic:' -e 'fuzzing process hung' "$log"; then
		return 2
	fi
	return 1
}

while read -r pkg dir; do
	while read -r target; do
		[[ "$target" == Fuzz* ]] || continue
		echo "== $pkg $target ($fuzztime)"
		rc=0
		fuzz "$pkg" "$dir" "$target" || rc=$?
		if [[ "$rc" == 2 ]]; then
			echo "== $pkg $target: 'context deadline exceeded' with no input written (go.dev/issue/75804): once more"
			rc=0
			fuzz "$pkg" "$dir" "$target" || rc=$?
		fi
		if [[ "$rc" != 0 ]]; then
			echo "== FAIL $pkg $target"
			status=1
		fi
	done < <(go test -list '^Fuzz' "$pkg")
done < <(go list -f '{{.ImportPath}} {{.Dir}}' ./...)
exit "$status"
