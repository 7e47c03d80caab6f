#!/usr/bin/env bash
# egressd-up.sh — bring an egressd NAT instance's data path up, in the order
# that never forwards an unfiltered packet: size conntrack for the instance's
# memory, install egressd's rules (egressd-iptables.sh apply), and only then
# switch IPv4 forwarding on. egressd-iptables.service runs it at boot.
#
# Usage:
#   egressd-up.sh                      do it (as root), with the settings below
#   egressd-up.sh conntrack-size FILE  print the nf_conntrack_max chosen for the
#                                      MemTotal in FILE (a /proc/meminfo), and exit
#
# Inputs (environment; the unit reads them from /etc/egressd/egressd.env and
# /run/egressd/interfaces.env):
#   PRIVATE_IF, PUBLIC_IF        interfaces; "auto" (or unset) is the interface of
#                                the IPv4 default route; they may be the same
#   EGRESSD_QUEUE_FIRST, EGRESSD_QUEUE_COUNT   NFQUEUE numbers (default 0 and 2)
#   EGRESSD_FAIL_OPEN            true adds --fail-open (default false)
#   EGRESSD_SOURCE_RATE          --source-rate: packets/s one source may send the queues (default 5000)
#   EGRESSD_SYN_LOG_ENABLED, EGRESSD_SYN_LOG_GROUP   SYNs logged, not queued, where no SYN
#                                is decided: --syn-log-group (default true and 10), or --no-syn-log
#   EGRESSD_INSPECT_PORTS_TCP, EGRESSD_INSPECT_PORTS_UDP   (default 80,443 and 443)
#   EGRESSD_SNAT_ADDRESS         an HA pair's floating address: --snat (default none: MASQUERADE)
#   EGRESSD_IPTABLES_SCRIPT      default /usr/libexec/egressd/egressd-iptables.sh
#
# Conntrack size: one entry per 8 KiB of memory (about 1/16 of the memory at
# roughly 500 bytes an entry with its hash bucket), at least 65536 and at most
# 4194304, never below what the kernel already has; buckets are a quarter of
# that. A t4g.nano gets 65536 entries, a t4g.small about 240000. Setting them
# can fail (e.g. inside a network namespace, where they are read-only): that is
# reported and the kernel's values stay.
#
# Exit status: 0 when the rules are in and forwarding is on; non-zero with the
# reason otherwise, and then forwarding is left off.
set -euo pipefail

CT_MIN=65536
CT_MAX=4194304
CT_BYTES_PER_ENTRY=8192

die() {
	echo "egressd-up: $*" >&2
	exit 1
}

# conntrack_size MEMINFO prints the conntrack table size for the memory in MEMINFO.
conntrack_size() {
	local kb
	kb="$(awk '$1 == "MemTotal:" { print $2; exit }' "$1")"
	[[ "$kb" =~ ^[0-9]+$ ]] || die "no MemTotal in $1"
	local n=$((kb * 1024 / CT_BYTES_PER_ENTRY))
	[ "$n" -ge "$CT_MIN" ] || n="$CT_MIN"
	[ "$n" -le "$CT_MAX" ] || n="$CT_MAX"
	echo "$n"
}

# default_if prints the interface of the IPv4 default route.
default_if() {
	ip -4 route show default | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }'
}

# size_conntrack raises nf_conntrack_max and the hash size to the sizes for
# this machine's memory; a failure is reported, not fatal.
size_conntrack() {
	local want cur max=/proc/sys/net/netfilter/nf_conntrack_max hs=/sys/module/nf_conntrack/parameters/hashsize
	[ -e "$max" ] || modprobe nf_conntrack 2>/dev/null || true
	if [ ! -e "$max" ]; then
		echo "egressd-up: conntrack is not loaded; leaving its size alone" >&2
		return 0
	fi
	want="$(conntrack_size /proc/meminfo)"
	cur="$(cat "$max")"
	if [ "$cur" -lt "$want" ]; then
		if { echo "$want" >"$max"; } 2>/dev/null; then
			echo "egressd-up: nf_conntrack_max $cur -> $want"
		else
			echo "egressd-up: cannot set nf_conntrack_max (read-only here); it stays $cur" >&2
		fi
	fi
	if [ -w "$hs" ] && [ "$(cat "$hs")" -lt $((want / 4)) ]; then
		{ echo $((want / 4)) >"$hs"; } 2>/dev/null ||
			echo "egressd-up: cannot set the conntrack hash size; it stays $(cat "$hs")" >&2
	fi
}

up() {
	# Forwarding off first: if anything below fails, nothing is forwarded.
	echo 0 >/proc/sys/net/ipv4/ip_forward
	local private="${PRIVATE_IF:-auto}" public="${PUBLIC_IF:-auto}"
	local script="${EGRESSD_IPTABLES_SCRIPT:-/usr/libexec/egressd/egressd-iptables.sh}"
	if [ "$private" = auto ] || [ "$public" = auto ]; then
		local def
		def="$(default_if)"
		[ -n "$def" ] || die "PRIVATE_IF/PUBLIC_IF are auto and there is no IPv4 default route; set them in /etc/egressd/egressd.env"
		[ "$private" != auto ] || private="$def"
		[ "$public" != auto ] || public="$def"
	fi
	local args=(apply --private "$private" --public "$public"
		--queues "${EGRESSD_QUEUE_FIRST:-0}:${EGRESSD_QUEUE_COUNT:-2}"
		--inspect-tcp "${EGRESSD_INSPECT_PORTS_TCP-80,443}"
		--inspect-udp "${EGRESSD_INSPECT_PORTS_UDP-443}"
		--source-rate "${EGRESSD_SOURCE_RATE:-5000}")
	case "${EGRESSD_FAIL_OPEN:-false}" in
	true | 1) args+=(--fail-open) ;;
	false | 0) ;;
	*) die "EGRESSD_FAIL_OPEN must be true or false, not '${EGRESSD_FAIL_OPEN}'" ;;
	esac
	case "${EGRESSD_SYN_LOG_ENABLED:-true}" in
	true | 1) args+=(--syn-log-group "${EGRESSD_SYN_LOG_GROUP:-10}") ;;
	false | 0) args+=(--no-syn-log) ;;
	*) die "EGRESSD_SYN_LOG_ENABLED must be true or false, not '${EGRESSD_SYN_LOG_ENABLED}'" ;;
	esac

	if [ -n "${EGRESSD_SNAT_ADDRESS:-}" ]; then
		args+=(--snat "$EGRESSD_SNAT_ADDRESS")
	fi

	size_conntrack
	"$script" "${args[@]}" || die "$script ${args[*]} failed; forwarding stays off"
	echo 1 >/proc/sys/net/ipv4/ip_forward
	echo "egressd-up: rules in place on $private -> $public; IPv4 forwarding on"
}

case "${1:-}" in
"") up ;;
conntrack-size)
	[ -n "${2:-}" ] || die "usage: egressd-up.sh conntrack-size MEMINFO"
	conntrack_size "$2"
	;;
-h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -euo/d' ;;
*) die "unknown argument '$1' (see --help)" ;;
esac
