#!/usr/bin/env bash
# provision.sh — install egressd on Amazon Linux 2023 from a release tarball
# (`make dist`): the packages a NAT instance needs, the binary, the scripts, the
# systemd units, the sysctls, the config and the deny-all starter policy. The
# Packer template runs it on the build instance; it also works on a running
# instance, and into a directory (DESTDIR) for tests.
#
# Usage: provision.sh DIST_DIR
#   DIST_DIR holds egressd-*-linux-amd64.tar.gz and/or -arm64.tar.gz and their
#   SHA256SUMS; the tarball for this machine's architecture is verified and
#   installed.
#
# Inputs (environment):
#   DESTDIR                 install under this root instead of / (tests)
#   EGRESSD_SKIP_PACKAGES   1: do not run dnf (tests, or a machine that has them)
#   EGRESSD_ARCH            amd64 or arm64 instead of `uname -m`'s
#   EGRESSD_STARTER_POLICY  a policy file to ship instead of the deny-all starter
#
# What it leaves (under DESTDIR):
#   /usr/bin/egressd
#   /usr/libexec/egressd/{egressd-iptables.sh,egressd-up.sh,egressd-eni.sh,egressd-push-policy.sh}
#   /usr/lib/systemd/system/{egressd,egressd-iptables,egressd-eni}.service, enabled
#   /usr/lib/systemd/system/{egressd-ha,egressd-conntrackd}.service, not enabled (HA pairs enable them)
#   /etc/egressd/{egressd.yaml,egressd.env,policy.yaml}  (policy.yaml only if absent)
#   /etc/sysctl.d/90-egressd.conf, /etc/modules-load.d/egressd.conf,
#   /etc/systemd/networkd.conf.d/egressd.conf
#   /usr/share/egressd/{examples/policy.yaml,ssm/egressd-push-policy.json}
#   /usr/share/doc/egressd/README.md   (egressd.service makes /var/log/egressd)
# On first boot the filter is closed: the rules are in, egressd runs the
# deny-all starter policy, and nothing is forwarded until a policy is pushed.
#
# Packages (dnf, Amazon Linux 2023): iptables-nft (the nft backend of
# iptables), ipset (the rules' set of ports whose SYNs are logged, not queued),
# amazon-ssm-agent and awscli-2 (policy pushes), amazon-cloudwatch-agent
# (decision logs), util-linux (flock), curl.
set -euo pipefail

die() {
	echo "provision: $*" >&2
	exit 1
}

PACKAGES=(iptables-nft ipset amazon-ssm-agent awscli-2 amazon-cloudwatch-agent util-linux curl-minimal conntrack-tools)
UNITS=(egressd-eni.service egressd-iptables.service egressd.service)
# Installed, not enabled: an instance of an HA pair enables them (README, "High availability").
HA_UNITS=(egressd-ha.service egressd-conntrackd.service)

dist="${1:-}"
if [ -z "$dist" ] || [ ! -d "$dist" ]; then
	die "usage: provision.sh DIST_DIR (a directory with the make dist tarballs)"
fi
D="${DESTDIR:-}"

arch="${EGRESSD_ARCH:-}"
if [ -z "$arch" ]; then
	case "$(uname -m)" in
	x86_64) arch=amd64 ;;
	aarch64) arch=arm64 ;;
	*) die "no egressd build for $(uname -m)" ;;
	esac
fi

shopt -s nullglob
tarballs=("$dist"/egressd-*-linux-"$arch".tar.gz)
shopt -u nullglob
[ "${#tarballs[@]}" -eq 1 ] || die "want exactly one egressd-*-linux-$arch.tar.gz in $dist, found ${#tarballs[@]}"
tarball="${tarballs[0]}"
[ -f "$dist/SHA256SUMS" ] || die "no SHA256SUMS in $dist"
(cd "$dist" && grep -F " $(basename "$tarball")" SHA256SUMS | sha256sum -c --quiet -) ||
	die "$(basename "$tarball") does not match $dist/SHA256SUMS"

if [ "${EGRESSD_SKIP_PACKAGES:-0}" != 1 ]; then
	[ -z "$D" ] || die "packages cannot be installed into DESTDIR; set EGRESSD_SKIP_PACKAGES=1"
	dnf -y -q install --setopt=install_weak_deps=False "${PACKAGES[@]}"
	dnf -q clean all
fi

work="$(mktemp -d)"
trap 'rm -rf -- "$work"' EXIT
tar -xzf "$tarball" -C "$work"
src="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'egressd-*')"
[ -d "$src" ] || die "$(basename "$tarball") has no egressd-* directory"

# put MODE SRC DST: install a file from the tarball.
put() {
	install -D -m "$1" -o 0 -g 0 -- "$src/$2" "$D$3"
}

put 0755 bin/egressd /usr/bin/egressd
for s in egressd-iptables.sh egressd-up.sh egressd-eni.sh egressd-push-policy.sh; do
	put 0755 "libexec/$s" "/usr/libexec/egressd/$s"
done
for u in "${UNITS[@]}" "${HA_UNITS[@]}"; do
	put 0644 "systemd/$u" "/usr/lib/systemd/system/$u"
done
put 0644 etc/egressd.yaml /etc/egressd/egressd.yaml
put 0644 etc/egressd.env /etc/egressd/egressd.env
if [ ! -e "$D/etc/egressd/policy.yaml" ]; then
	if [ -n "${EGRESSD_STARTER_POLICY:-}" ]; then
		"$src/bin/egressd" check "$EGRESSD_STARTER_POLICY" || die "the starter policy $EGRESSD_STARTER_POLICY is refused"
		install -D -m 0644 -o 0 -g 0 -- "$EGRESSD_STARTER_POLICY" "$D/etc/egressd/policy.yaml"
	else
		put 0644 etc/policy.yaml /etc/egressd/policy.yaml
	fi
fi
put 0644 etc/sysctl.d/90-egressd.conf /etc/sysctl.d/90-egressd.conf
put 0644 etc/modules-load.d/egressd.conf /etc/modules-load.d/egressd.conf
put 0644 etc/networkd.conf.d/egressd.conf /etc/systemd/networkd.conf.d/egressd.conf
put 0644 examples/policy.yaml /usr/share/egressd/examples/policy.yaml
put 0644 ssm/egressd-push-policy.json /usr/share/egressd/ssm/egressd-push-policy.json
put 0644 README.md /usr/share/doc/egressd/README.md

enable=("${UNITS[@]}")
if [ "${EGRESSD_SKIP_PACKAGES:-0}" != 1 ]; then
	enable+=(amazon-ssm-agent.service)
fi
if [ -n "$D" ]; then
	systemctl --root="$D" enable "${enable[@]}"
else
	systemctl enable "${enable[@]}"
fi

echo "provision: installed egressd $(cat "$src/VERSION") ($arch) under ${D:-/}"
