#!/usr/bin/env bash
# egressd-push-policy.sh — fetch an egressd policy, check it, install it
# atomically, reload egressd and wait until egressd reports it loaded; on any
# failure put the previous policy back and exit non-zero with the reason.
#
# This file is the script of the SSM Command document egressd-push-policy
# (deploy/ssm/egressd-push-policy.json, generated from it by `make ssm-doc`;
# a test checks that the two agree). SSM runs it with the document's
# parameters in place of the arguments of the last line.
#
# Usage: egressd-push-policy.sh SOURCE [INLINE_BASE64 [TIMEOUT_SECONDS]]
#   SOURCE  s3://bucket/key      fetched with `aws s3 cp`
#           ssm:NAME[:VERSION]   a Parameter Store parameter (SecureString too),
#                                `aws ssm get-parameter --with-decryption`;
#                                values are capped at 4 KB (8 KB advanced): use S3 beyond
#           inline               INLINE_BASE64 is the policy, base64-encoded
#   TIMEOUT_SECONDS  how long to wait for egressd to load it (default 30)
#
# Steps: fetch into a file beside the policy; `egressd check` it (with the
# daemon's inspect ports), which prints "file:line: message" for each problem;
# if egressd already runs this exact policy, stop there (exit 0, no reload);
# copy the current policy to policy.yaml.prev; fsync the new file, rename it
# over the policy, fsync the directory; reload egressd; poll /readyz until its
# policy_sha256 is the new file's sha256. If the reload or the wait fails, the
# previous file is renamed back and egressd reloaded again.
#
# Inputs (environment; the defaults are the AMI's):
#   EGRESSD_POLICY      the policy file egressd runs   (/etc/egressd/policy.yaml)
#   EGRESSD_ENV         the shared settings file        (/etc/egressd/egressd.env)
#   EGRESSD_BIN         the egressd binary              (egressd, on PATH)
#   EGRESSD_READYZ      egressd's readiness URL         (http://127.0.0.1:9145/readyz)
#   EGRESSD_RELOAD_CMD  how to reload egressd           (systemctl reload egressd.service)
# Needs: bash, coreutils, curl, flock, the AWS CLI for s3:// and ssm: sources.
#
# Exit status: 0 the policy is in force (or already was); 1 refused or failed,
# the previous policy in force; 2 bad arguments.

# SSM runs its scripts with sh; this one needs bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

POLICY="${EGRESSD_POLICY:-/etc/egressd/policy.yaml}"
ENV_FILE="${EGRESSD_ENV:-/etc/egressd/egressd.env}"
BIN="${EGRESSD_BIN:-egressd}"
READYZ="${EGRESSD_READYZ:-http://127.0.0.1:9145/readyz}"
RELOAD_CMD="${EGRESSD_RELOAD_CMD:-systemctl reload egressd.service}"

# The temporary files of this run, removed on exit whatever happens.
tmp_files=()
cleanup() { [ "${#tmp_files[@]}" -eq 0 ] || rm -f -- "${tmp_files[@]}"; }
trap cleanup EXIT

say() { echo "egressd-push-policy: $*"; }

fail() {
	say "FAILED: $*" >&2
	exit 1
}

usage() {
	say "usage: egressd-push-policy.sh s3://BUCKET/KEY|ssm:NAME|inline [INLINE_BASE64 [TIMEOUT_SECONDS]]" >&2
	exit 2
}

# env_value KEY prints KEY's value from the shared settings file, if set there.
env_value() {
	[ -r "$ENV_FILE" ] || return 0
	sed -n "s/^[[:space:]]*$1=[\"']\{0,1\}\([^\"']*\)[\"']\{0,1\}[[:space:]]*\$/\1/p" "$ENV_FILE" | tail -n 1
}

# loaded_hash prints the policy_sha256 that egressd reports, or nothing.
loaded_hash() {
	local body
	body="$(curl -sS -m 2 "$READYZ" 2>/dev/null)" || return 0
	sed -n 's/.*"policy_sha256"[[:space:]]*:[[:space:]]*"\([0-9a-f]\{64\}\)".*/\1/p' <<<"$body" | head -n 1
}

# wait_loaded HASH SECONDS waits until egressd reports HASH as loaded.
wait_loaded() {
	local deadline=$((SECONDS + $2)) got=""
	while [ "$SECONDS" -lt "$deadline" ]; do
		got="$(loaded_hash)"
		[ "$got" != "$1" ] || return 0
		sleep 0.5
	done
	say "egressd reports policy_sha256 '${got:-none}' at $READYZ, not $1, after $2 s" >&2
	return 1
}

reload() { bash -c "$RELOAD_CMD"; }

# install_file SRC: fsync SRC (beside POLICY), rename it over POLICY, fsync the directory.
install_file() {
	sync -- "$1"
	mv -f -- "$1" "$POLICY"
	sync -- "$(dirname "$POLICY")"
}

fetch() {
	local source="$1" inline="$2" out="$3"
	case "$source" in
	s3://*)
		aws s3 cp --only-show-errors "$source" "$out" ;;
	ssm:*)
		aws ssm get-parameter --name "${source#ssm:}" --with-decryption \
			--query Parameter.Value --output text >"$out" ;;
	inline)
		[ -n "$inline" ] || { say "source inline needs the policy, base64-encoded" >&2; return 1; }
		base64 -d <<<"$inline" >"$out" ;;
	esac
}

main() {
	local source="${1:-}" inline="${2:-}" timeout="${3:-30}"
	[ -z "${4:-}" ] || usage
	case "$source" in
	s3://?*/?* | ssm:?* | inline) ;;
	*) usage ;;
	esac
	[[ "$timeout" =~ ^[1-9][0-9]{0,3}$ ]] || usage

	local dir
	dir="$(dirname "$POLICY")"
	[ -d "$dir" ] || fail "$dir does not exist"
	# One push at a time (an association run and a manual one may overlap).
	exec 9>"$dir/.egressd-push-policy.lock"
	flock -w 60 9 || fail "another push holds $dir/.egressd-push-policy.lock"

	local new
	new="$(mktemp "$dir/.policy.yaml.new.XXXXXX")"
	tmp_files+=("$new" "$POLICY.prev.tmp")

	say "fetching the policy from $source"
	fetch "$source" "$inline" "$new" || fail "cannot fetch the policy from $source; nothing changed"
	[ -s "$new" ] || fail "the policy from $source is empty; nothing changed"
	chmod 0644 "$new"

	local check_args=() tcp udp
	tcp="$(env_value EGRESSD_INSPECT_PORTS_TCP)"
	udp="$(env_value EGRESSD_INSPECT_PORTS_UDP)"
	[ -z "$tcp" ] || check_args+=(--inspect-tcp "$tcp")
	[ -z "$udp" ] || check_args+=(--inspect-udp "$udp")
	local out
	if ! out="$("$BIN" check "${check_args[@]}" "$new" 2>&1)"; then
		# Name the source, not the temporary file, in every file:line message.
		out="${out//"$new"/"$source"}"
		printf '%s\n' "$out" >&2
		fail "egressd check refused the policy from $source; nothing changed"
	fi
	local hash
	hash="$(sha256sum -- "$new" | cut -d' ' -f1)"
	say "egressd check: ${out//"$new"/"$source"}"

	local old_hash
	old_hash="$(loaded_hash)"
	if [ "$old_hash" = "$hash" ] && cmp -s -- "$new" "$POLICY"; then
		say "policy sha256 $hash is already loaded; nothing to do"
		return 0
	fi

	local had_old=0
	if [ -e "$POLICY" ]; then
		had_old=1
		cp -p -- "$POLICY" "$POLICY.prev.tmp"
		sync -- "$POLICY.prev.tmp"
		mv -f -- "$POLICY.prev.tmp" "$POLICY.prev"
	fi
	install_file "$new"
	say "installed $POLICY (sha256 $hash); reloading egressd"

	local why=""
	if ! reload; then
		why="reload command '$RELOAD_CMD' failed"
	elif ! wait_loaded "$hash" "$timeout"; then
		why="egressd did not report the new policy as loaded within $timeout s"
	fi
	if [ -z "$why" ]; then
		say "OK: egressd runs policy sha256 $hash (from $source)"
		return 0
	fi

	say "$why; rolling back" >&2
	if [ "$had_old" -eq 1 ]; then
		cp -p -- "$POLICY.prev" "$POLICY.prev.tmp"
		install_file "$POLICY.prev.tmp"
		if reload && wait_loaded "$(sha256sum -- "$POLICY" | cut -d' ' -f1)" "$timeout"; then
			fail "$why; the previous policy is back in force"
		fi
		fail "$why; the previous policy file is back, but egressd has not reported it loaded either"
	fi
	rm -f -- "$POLICY"
	fail "$why; there was no previous policy, so $POLICY is removed"
}

main "$@"
