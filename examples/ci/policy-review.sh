#!/usr/bin/env bash
# policy-review.sh — what a change to an egressd policy would do, as Markdown
# for a pull request's comment: `egressd check` of the new policy, then
# `egressd replay --baseline` of the last decision logs against the old and
# the new policy, the flows whose verdict changes counted per rule.
#
# The GitHub Actions workflow beside it (policy-review.yml) runs it on every
# pull request to the policy repository and posts its output; run it by hand
# the same way:
#
#   policy-review.sh OLD_POLICY NEW_POLICY LOG... > review.md
#
#   OLD_POLICY  the policy in force: a file or a directory (the base branch's)
#   NEW_POLICY  the proposed policy: a file or a directory (the pull request's)
#   LOG         decision logs (the daemon's log.decisions_file and its
#               rotations, gzipped or not) or captures: what replay reads
#
# Inputs (environment):
#   EGRESSD          the egressd binary                        (egressd, on PATH)
#   EGRESSD_CONFIG   the daemon's config, for its inspect_ports (none: the defaults)
#   REVIEW_EXAMPLES  names listed per rule                     (5)
# Needs: bash, jq, egressd.
#
# Exit status: 0 the change was reviewed (whatever it allows or denies); 1 the
# new policy fails `egressd check` (the Markdown says why); 2 bad arguments, or
# an input replay cannot read.

set -euo pipefail

EGRESSD="${EGRESSD:-egressd}"
EXAMPLES="${REVIEW_EXAMPLES:-5}"

usage() {
	echo "usage: policy-review.sh OLD_POLICY NEW_POLICY LOG..." >&2
	exit 2
}

tmp="$(mktemp -d)"
cleanup() { rm -rf -- "$tmp"; }
trap cleanup EXIT

# rule_table VERDICT prints a Markdown table of the changed flows that the new
# policy gives VERDICT, one row per deciding rule, the most flows first.
rule_table() {
	# shellcheck disable=SC2016 # $v and $n are jq's variables, not the shell's
	jq -rs --arg v "$1" --arg n "$EXAMPLES" '
		def flow: if .name == "" then "\(.dst):\(.dport)/\(.proto) (no name)" else .name end;
		def rule: if . == "" or . == null then "(none)" else "`" + . + "`" end;
		map(select(.verdict == $v))
		| group_by(.rule) | sort_by(-length, .[0].rule) | .[]
		| "| \(.[0].rule | rule) | \(map(.reason) | unique | join(", "))"
		+ " | \(map(.baseline.rule | rule) | unique | join(", "))"
		+ " | \(length) | \(map(.src) | unique | length)"
		+ " | \(group_by(flow) | sort_by(-length, (.[0] | flow)) | .[:($n | tonumber)]
			| map("\(.[0] | flow) (\(length))") | join(", ")) |"
	' "$tmp/changes.jsonl"
}

main() {
	[ "$#" -ge 3 ] || usage
	local old="$1" new="$2"
	shift 2
	[[ "$EXAMPLES" =~ ^[1-9][0-9]{0,2}$ ]] || usage
	local cfg=()
	[ -z "${EGRESSD_CONFIG:-}" ] || cfg=(--config "$EGRESSD_CONFIG")

	echo "## egress policy review"
	echo
	local out
	if ! out="$("$EGRESSD" check "${cfg[@]}" "$new" 2>&1)"; then
		echo "**\`egressd check\` refuses the new policy**, so egressd would not load it:"
		echo
		echo '```text'
		printf '%s\n' "$out"
		echo '```'
		return 1
	fi
	echo "\`egressd check\`:"
	echo
	echo '```text'
	printf '%s\n' "$out"
	echo '```'
	echo

	# replay --config reads its policy from the config unless --policy is
	# given; it is, so only inspect_ports and the engine's settings come
	# from there.
	local log compared=0 n
	: >"$tmp/changes.jsonl"
	for log in "$@"; do
		if ! "$EGRESSD" replay "${cfg[@]}" --policy "$new" --baseline "$old" "$log" \
			>>"$tmp/changes.jsonl" 2>"$tmp/summary.txt"; then
			cat "$tmp/summary.txt" >&2
			echo "policy-review.sh: egressd replay cannot read $log" >&2
			return 2
		fi
		n="$(sed -n 's/^replay: \([0-9]*\) flows compared.*/\1/p' "$tmp/summary.txt")"
		compared=$((compared + ${n:-0}))
	done
	local denied allowed
	denied="$(jq -s 'map(select(.verdict == "deny")) | length' "$tmp/changes.jsonl")"
	allowed="$(jq -s 'map(select(.verdict == "allow")) | length' "$tmp/changes.jsonl")"
	echo "Replayed $compared flows from $# input(s) (decision logs or captures) against the policy in force and the" \
		"proposed one: **$allowed newly allowed, $denied newly denied**."
	if [ "$allowed" -gt 0 ]; then
		echo
		echo "### Newly allowed"
		echo
		echo "| allowed by | reason | denied before by | flows | sources | names (flows) |"
		echo "|---|---|---|---|---|---|"
		rule_table allow
	fi
	if [ "$denied" -gt 0 ]; then
		echo
		echo "### Newly denied"
		echo
		echo "| denied by | reason | allowed before by | flows | sources | names (flows) |"
		echo "|---|---|---|---|---|---|"
		rule_table deny
	fi
	if [ "$allowed" -eq 0 ] && [ "$denied" -eq 0 ]; then
		echo
		echo "No flow in these logs gets another verdict."
	fi
}

main "$@"
