#!/usr/bin/env bash
# prereqs.sh — check that the tools a make target needs are installed; as
# root with apt-get, install the Debian packages of the missing ones first.
#
# Usage: scripts/prereqs/prereqs.sh PURPOSE...
#   PURPOSE is a first field of packages.txt (build, lint, lab, test, deploy,
#   bench, profile): `make demo` checks build and lab, `make test` build,
#   lab, test and deploy, .ci/run build, lint, lab, test and deploy.
#
# Inputs: packages.txt beside this script (purpose, Debian package, the tools
# it brings); PATH; `id -u`, which says whether this runs as root.
#
# With every tool present it prints nothing. When some are missing:
#   - as root with apt-get on PATH, it prints one line, the command it runs
#     (apt-get update, then apt-get install of the missing packages by name),
#     runs it, and checks again;
#   - otherwise (not root, or no apt-get), it names each missing tool with
#     its package and the command that installs them, and exits 1.
# Go is checked too with build, never installed: Debian 12's golang is older
# than go.mod's.
# Exits 0 when everything is present (at the end), 1 when something is
# missing, 2 on bad usage.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
list="$here/packages.txt"
gomod="$here/../../go.mod"

die() {
	echo "prereqs: $*" >&2
	exit 2
}

[ $# -gt 0 ] || die "usage: $0 PURPOSE...   (purposes: the first field of $list)"

# The list, one entry per line: purposes[i] packages_of[i] tools_of[i].
purposes=() packages_of=() tools_of=()
while read -r purpose pkg tools; do
	[[ -n "$purpose" && "$purpose" != "#"* ]] || continue
	purposes+=("$purpose") packages_of+=("$pkg") tools_of+=("$tools")
done <"$list"
known=()
for p in "${purposes[@]}"; do
	[[ " ${known[*]} " == *" $p "* ]] || known+=("$p")
done
for p in "$@"; do
	[[ " ${known[*]} " == *" $p "* ]] || die "unknown purpose \"$p\" (packages.txt has: ${known[*]})"
done

# present TOOL: TOOL (a command, or an absolute path) is installed.
present() {
	case "$1" in
	/*) [ -e "$1" ] ;;
	*) command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] ;;
	esac
}

# scan PURPOSE...: set missing (lines "TOOL: PACKAGE") and packages (the
# packages of the missing tools, in list order, each once).
scan() {
	missing=() packages=()
	local i t
	for i in "${!purposes[@]}"; do
		[[ " $* " == *" ${purposes[i]} "* ]] || continue
		for t in ${tools_of[i]}; do
			present "$t" && continue
			missing+=("$t: ${packages_of[i]}")
			[[ " ${packages[*]} " == *" ${packages_of[i]} "* ]] || packages+=("${packages_of[i]}")
		done
	done
}

# gomissing PURPOSE...: the line to print when build needs Go and go is not
# on PATH; nothing otherwise.
gomissing() {
	if [[ " $* " != *" build "* ]] || command -v go >/dev/null; then
		return 0
	fi
	local k v=""
	while read -r k v; do [ "$k" != go ] || break; done <"$gomod"
	echo "go: not a Debian package (Debian 12's golang is older): install Go ${v:-of go.mod} and put its bin/ on PATH"
}

scan "$@"
golack="$(gomissing "$@")"
[ ${#missing[@]} -gt 0 ] || [ -n "$golack" ] || exit 0

update=(apt-get update -qq)
install=(apt-get install -y -qq --no-install-recommends "${packages[@]}")
root=0
[ "$(id -u)" != 0 ] || root=1
if [ ${#missing[@]} -gt 0 ] && [ "$root" = 1 ] && command -v apt-get >/dev/null; then
	echo "prereqs: missing ${missing[*]%%:*}; running: ${update[*]} && ${install[*]}"
	export DEBIAN_FRONTEND=noninteractive
	"${update[@]}"
	"${install[@]}"
	scan "$@"
	if [ ${#missing[@]} -gt 0 ]; then
		echo "prereqs: still missing after apt-get install:" >&2
		printf '  %s\n' "${missing[@]}" >&2
		exit 1
	fi
	[ -z "$golack" ] || { echo "prereqs: $golack" >&2; exit 1; }
	exit 0
fi

{
	echo "prereqs: missing (tool: Debian package):"
	[ ${#missing[@]} -eq 0 ] || printf '  %s\n' "${missing[@]}"
	[ -z "$golack" ] || echo "  $golack"
	if [ ${#missing[@]} -gt 0 ]; then
		if [ "$root" = 0 ]; then
			echo "install them as root:"
		else
			echo "this machine has no apt-get; on Debian 12, install them with:"
		fi
		echo "  ${update[*]} && ${install[*]}"
	fi
} >&2
exit 1
