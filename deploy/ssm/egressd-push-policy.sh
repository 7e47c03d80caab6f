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
# Usage: egressd-push-policy.sh SOURCE [INLINE_BASE64 [TIMEOUT_SECONDS [POLICY_FILE]]]
#   SOURCE  s3://bucket/key      fetched with `aws s3 cp`
#           s3://bucket/prefix/  (a policy directory) its *.yaml objects, `aws s3 cp --recursive`
#           ssm:NAME[:VERSION]   a Parameter Store parameter (SecureString too),
#                                `aws ssm get-parameter --with-decryption`;
#                                values are capped at 4 KB (8 KB advanced): use S3 beyond
#           inline               INLINE_BASE64 is the policy, base64-encoded
#           remove               (with POLICY_FILE) remove that file from the directory
#   TIMEOUT_SECONDS  how long to wait for egressd to load it (default 30)
#   POLICY_FILE      with a policy directory: the one file of it (NAME.yaml) that
#                    SOURCE is; the others stay as they are (break glass)
#
# A policy directory (EGRESSD_POLICY is a directory, or a link to one): the
# whole directory is replaced by SOURCE, which is then an S3 prefix ending in
# "/", or a gzipped tar of its files (inline, or base64 in a parameter); or,
# with POLICY_FILE, only that file is written (or removed). Files named
# break-glass-*.yaml that the new directory lacks are kept across a whole
# replacement, until every rule in them has expired. The directory is
# installed as a new version under POLICY.versions/ and POLICY becomes a link
# to it, swapped atomically (a new link renamed over it); the previous
# version stays for the rollback, older ones are removed. The hash egressd
# reports for a directory is that of `sha256sum *.yaml` run in it.
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
# Needs also, for a policy directory: tar, gzip, readlink, find.

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
cleanup() { [ "${#tmp_files[@]}" -eq 0 ] || rm -rf -- "${tmp_files[@]}"; }
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

# reload_wait HASH SECONDS reloads egressd and waits until it reports HASH
# loaded; when it does not, it sets the caller's why to the reason and fails.
reload_wait() {
	why=""
	if ! reload; then
		why="reload command '$RELOAD_CMD' failed"
	elif ! wait_loaded "$1" "$2"; then
		why="egressd did not report the new policy as loaded within $2 s"
	fi
	[ -z "$why" ]
}

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

# dir_hash DIR prints the hash egressd reports for a policy directory: the
# SHA-256 of the "HEX  NAME" lines of its *.yaml files, in name order.
dir_hash() {
	(cd -- "$1" && LC_ALL=C sha256sum -- *.yaml | sha256sum | cut -d' ' -f1)
}

# fetch_dir SOURCE INLINE DIR puts a whole policy directory's files in DIR.
fetch_dir() {
	local source="$1" inline="$2" out="$3" tgz
	case "$source" in
	s3://*/)
		aws s3 cp --only-show-errors --recursive --exclude '*' --include '*.yaml' "$source" "$out" ;;
	*)
		tgz="$(mktemp "$out.tgz.XXXXXX")"
		tmp_files+=("$tgz")
		case "$source" in
		ssm:*) fetch "$source" "" "$tgz.b64" && tmp_files+=("$tgz.b64") && base64 -d <"$tgz.b64" >"$tgz" ;;
		*) fetch "$source" "$inline" "$tgz" ;;
		esac || return 1
		tar -xzf "$tgz" -C "$out" --no-same-owner --no-same-permissions ;;
	esac || return 1
	# Only the directory's own policy files: no links, subdirectories,
	# hidden or other files.
	find "$out" -mindepth 1 -maxdepth 1 \( ! -type f -o ! -name '*.yaml' -o -name '.*' \) -exec rm -rf -- {} +
}

# check_dir DIR SHOWN runs egressd check on DIR, printing its output with DIR
# shown as SHOWN; it fails when check does.
check_dir() {
	local out rc=0
	out="$("$BIN" check "${check_args[@]}" "$1" 2>&1)" || rc=$?
	printf '%s\n' "${out//"$1"/"$2"}"
	return "$rc"
}

# swap_link DIR points POLICY at DIR: a new link renamed over the old one.
swap_link() {
	ln -sfn -- "$1" "$POLICY.link.tmp"
	mv -Tf -- "$POLICY.link.tmp" "$POLICY"
	sync -- "$(dirname "$POLICY")"
}

# push_dir SOURCE INLINE TIMEOUT FILE: main's work for a policy directory.
push_dir() {
	local source="$1" inline="$2" timeout="$3" file="$4"
	local versions="$POLICY.versions" cur new out
	mkdir -p -- "$versions"
	cur="$(readlink -f -- "$POLICY")"
	new="$(mktemp -d "$versions/.new.XXXXXX")"
	tmp_files+=("$new" "$POLICY.link.tmp")
	if [ -n "$file" ]; then
		find "$cur" -mindepth 1 -maxdepth 1 -type f -name '*.yaml' ! -name '.*' -exec cp -p -- {} "$new/" \;
		if [ "$source" = remove ]; then
			[ -e "$new/$file" ] || fail "$file is not a file of the policy $POLICY; nothing changed"
			say "removing $file from the policy"
			rm -f -- "$new/$file"
		else
			say "fetching $file of the policy from $source"
			fetch "$source" "$inline" "$new/$file" || fail "cannot fetch $file from $source; nothing changed"
			[ -s "$new/$file" ] || fail "$file from $source is empty; nothing changed"
		fi
	else
		say "fetching the policy directory from $source"
		fetch_dir "$source" "$inline" "$new" || fail "cannot fetch the policy directory from $source; nothing changed"
		local bg
		for bg in "$cur"/break-glass-*.yaml; do
			if [ -f "$bg" ] && [ ! -e "$new/${bg##*/}" ]; then
				cp -p -- "$bg" "$new/"
				say "keeping ${bg##*/} (break glass) from the running policy"
			fi
		done
	fi
	compgen -G "$new/*.yaml" >/dev/null || fail "the policy from $source has no *.yaml files; nothing changed"
	chmod 0755 "$new"
	chmod 0644 "$new"/*.yaml
	if ! out="$(check_dir "$new" "$POLICY")"; then
		printf '%s\n' "$out" >&2
		fail "egressd check refused the policy from $source; nothing changed"
	fi
	# A kept break-glass file whose rules have all expired goes now.
	local spent dropped=0
	while IFS= read -r spent; do
		spent="${spent#"$POLICY"/}"
		case "$spent" in break-glass-*.yaml) ;; *) continue ;; esac
		[ -n "$file" ] && [ "$spent" = "$file" ] && continue
		rm -f -- "$new/$spent"
		say "removing $spent: every rule in it has expired"
		dropped=1
	done < <(sed -n 's/^\(.*\): note: every rule of this file has expired; it can be removed$/\1/p' <<<"$out")
	if [ "$dropped" -eq 1 ] && ! out="$(check_dir "$new" "$POLICY")"; then
		printf '%s\n' "$out" >&2
		fail "egressd check refused the policy without its expired break-glass files; nothing changed"
	fi
	say "egressd check: $out"

	local hash
	hash="$(dir_hash "$new")"
	if [ "$(loaded_hash)" = "$hash" ] && [ "$(dir_hash "$cur")" = "$hash" ]; then
		say "policy sha256 $hash is already loaded; nothing to do"
		return 0
	fi
	local final
	final="$versions/$(date -u +%Y%m%dT%H%M%SZ)-${hash:0:12}"
	mv -T -- "$new" "$final"
	if [ ! -L "$POLICY" ]; then
		# The first push: the directory becomes a version of its own.
		local first
		first="$versions/$(date -u +%Y%m%dT%H%M%SZ)-first"
		mv -T -- "$POLICY" "$first"
		cur="$first"
	fi
	swap_link "$final"
	say "installed $POLICY -> $final (sha256 $hash); reloading egressd"

	local why=""
	if reload_wait "$hash" "$timeout"; then
		# Keep the previous version for a rollback by hand; drop older ones.
		local v
		for v in "$versions"/*; do
			[ "$v" = "$final" ] || [ "$v" = "$cur" ] || rm -rf -- "$v"
		done
		say "OK: egressd runs policy sha256 $hash (from $source)"
		return 0
	fi
	say "$why; rolling back" >&2
	swap_link "$cur"
	rm -rf -- "$final"
	if reload && wait_loaded "$(dir_hash "$cur")" "$timeout"; then
		fail "$why; the previous policy is back in force"
	fi
	fail "$why; the previous policy directory is back, but egressd has not reported it loaded either"
}

main() {
	local source="${1:-}" inline="${2:-}" timeout="${3:-30}" file="${4:-}"
	[ -z "${5:-}" ] || usage
	case "$source" in
	s3://?*/?* | ssm:?* | inline | remove) ;;
	*) usage ;;
	esac
	[[ "$timeout" =~ ^[1-9][0-9]{0,3}$ ]] || usage
	[[ "$file" =~ ^([A-Za-z0-9][A-Za-z0-9._-]{0,99}\.yaml)?$ ]] || usage
	[ "$source" != remove ] || [ -n "$file" ] || usage

	local dir
	dir="$(dirname "$POLICY")"
	[ -d "$dir" ] || fail "$dir does not exist"
	# One push at a time (an association run and a manual one may overlap).
	exec 9>"$dir/.egressd-push-policy.lock"
	flock -w 60 9 || fail "another push holds $dir/.egressd-push-policy.lock"

	check_args=()
	local tcp udp
	tcp="$(env_value EGRESSD_INSPECT_PORTS_TCP)"
	udp="$(env_value EGRESSD_INSPECT_PORTS_UDP)"
	[ -z "$tcp" ] || check_args+=(--inspect-tcp "$tcp")
	[ -z "$udp" ] || check_args+=(--inspect-udp "$udp")

	if [ -d "$POLICY" ]; then
		push_dir "$source" "$inline" "$timeout" "$file"
		return
	fi
	[ -z "$file" ] || fail "PolicyFile $file needs a policy directory, and $POLICY is a file"
	case "$source" in
	*/ | remove) fail "$source needs a policy directory, and $POLICY is a file" ;;
	esac

	local new
	new="$(mktemp "$dir/.policy.yaml.new.XXXXXX")"
	tmp_files+=("$new" "$POLICY.prev.tmp")

	say "fetching the policy from $source"
	fetch "$source" "$inline" "$new" || fail "cannot fetch the policy from $source; nothing changed"
	[ -s "$new" ] || fail "the policy from $source is empty; nothing changed"
	chmod 0644 "$new"

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
	if reload_wait "$hash" "$timeout"; then
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
