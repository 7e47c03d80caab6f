#!/usr/bin/env bash
# dist.sh — pack egressd's release tarballs, one per architecture, reproducibly.
#
# Usage: deploy/dist.sh OUTDIR VERSION ARCH=BINARY...
#   e.g. deploy/dist.sh dist v1.2.0 amd64=dist/.build/egressd-linux-amd64 arm64=...
#
# Writes OUTDIR/egressd-VERSION-linux-ARCH.tar.gz for each ARCH and
# OUTDIR/SHA256SUMS over them. Each tarball holds one directory,
# egressd-VERSION-linux-ARCH/, with:
#   bin/egressd                      the static binary
#   libexec/egressd-iptables.sh      the rule layout (scripts/iptables)
#   libexec/egressd-up.sh, egressd-eni.sh, egressd-push-policy.sh
#   systemd/*.service                egressd, egressd-iptables, egressd-eni, egressd-ha, egressd-conntrackd
#   etc/                             egressd.yaml, egressd.env, the deny-all starter
#                                    policy.yaml, sysctl.d, modules-load.d,
#                                    networkd.conf.d
#   examples/policy.yaml             a realistic policy
#   ssm/egressd-push-policy.json     the SSM document
#   provision.sh                     installs all of it (packer/provision.sh)
#   README.md, VERSION
#
# Reproducible: the same inputs give the same bytes whatever the umask, the
# files' times or the user: names sorted, owner 0:0, modes normalised, every
# time set to SOURCE_DATE_EPOCH (default: the last commit's time), gzip
# without a name or time stamp.
set -euo pipefail

die() {
	echo "dist.sh: $*" >&2
	exit 2
}

[ $# -ge 3 ] || die "usage: dist.sh OUTDIR VERSION ARCH=BINARY..."
out="$1" version="$2"
shift 2
[[ "$version" =~ ^[A-Za-z0-9._+-]+$ ]] || die "version '$version' has characters a file name should not"

root="$(cd "$(dirname "$0")/.." && pwd)"
epoch="${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}"
[[ "$epoch" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH '$epoch' is not a number"

stage="$(mktemp -d)"
trap 'rm -rf -- "$stage"' EXIT

# put SRC DST MODE: copy SRC to stage-relative DST with MODE.
put() {
	install -D -m "$3" -- "$root/$1" "$pkg/$2"
}

mkdir -p "$out"
tarballs=()
for pair in "$@"; do
	arch="${pair%%=*}" bin="${pair#*=}"
	[[ "$arch" =~ ^(amd64|arm64)$ ]] || die "architecture '$arch' is not amd64 or arm64"
	[ -f "$bin" ] || die "no binary at $bin"
	name="egressd-$version-linux-$arch"
	pkg="$stage/$name"
	install -D -m 0755 -- "$bin" "$pkg/bin/egressd"
	put scripts/iptables/egressd-iptables.sh libexec/egressd-iptables.sh 0755
	put deploy/libexec/egressd-up.sh libexec/egressd-up.sh 0755
	put deploy/libexec/egressd-eni.sh libexec/egressd-eni.sh 0755
	put deploy/ssm/egressd-push-policy.sh libexec/egressd-push-policy.sh 0755
	for unit in egressd.service egressd-iptables.service egressd-eni.service egressd-ha.service egressd-conntrackd.service; do
		put "deploy/systemd/$unit" "systemd/$unit" 0644
	done
	for f in egressd.yaml egressd.env policy.yaml sysctl.d/90-egressd.conf modules-load.d/egressd.conf \
		networkd.conf.d/egressd.conf; do
		put "deploy/etc/$f" "etc/$f" 0644
	done
	put examples/policy.yaml examples/policy.yaml 0644
	put deploy/ssm/egressd-push-policy.json ssm/egressd-push-policy.json 0644
	put packer/provision.sh provision.sh 0755
	put deploy/README.md README.md 0644
	printf '%s\n' "$version" >"$pkg/VERSION"
	chmod 0644 "$pkg/VERSION"

	find "$pkg" -type d -exec chmod 0755 {} +
	tar -C "$stage" --sort=name --format=gnu --owner=0 --group=0 --numeric-owner \
		--mtime="@$epoch" -cf - "$name" | gzip -9 -n >"$out/$name.tar.gz"
	tarballs+=("$name.tar.gz")
done
(cd "$out" && sha256sum -- "${tarballs[@]}" >SHA256SUMS)
echo "dist.sh: wrote ${tarballs[*]} and SHA256SUMS in $out"
