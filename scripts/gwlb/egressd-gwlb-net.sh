#!/usr/bin/env bash
# egressd-gwlb-net.sh — the network side of egressd as a Gateway Load Balancer target: the
# tun device egressd's GENEVE path reads and writes, the routes that send packets back into
# it, and the few netfilter rules around it. egressd-iptables.sh's rules (run with --private
# and --public as below) do the filtering, unchanged.
#
# Usage:
#   egressd-gwlb-net.sh apply  --mode one-arm|two-arm [--interface gwlb0]
#   egressd-gwlb-net.sh remove [--interface gwlb0]
#   egressd-gwlb-net.sh status [--interface gwlb0]   exit 0 when all is in place, 3 when not
#
# Inputs (environment): IPTABLES (default "iptables"), as for egressd-iptables.sh.
#
# The path of a client's packet (egressd's GENEVE handler decapsulates into the device and
# encapsulates what the kernel routes to it, under the header of the flow's latest packet):
#
#   one-arm: GWLB -> eth0:6081 -> egressd -> gwlb0 -> FORWARD (egressd's rules) -> gwlb0
#            -> egressd -> GWLB (untranslated; a NAT gateway behind the endpoint translates)
#            egressd-iptables.sh apply --private gwlb0 --public gwlb0 --no-masquerade
#   two-arm: GWLB -> eth0:6081 -> egressd -> gwlb0 -> FORWARD -> MASQUERADE out of eth0;
#            replies: eth0 -> FORWARD -> gwlb0 -> egressd -> GWLB
#            egressd-iptables.sh apply --private gwlb0 --public eth0
#
# What apply sets up (idempotent; remove takes all of it away):
#   - the tun device, persistent and multi-queue (egressd attaches a queue per reader), MTU
#     8500 (the load balancer's: the kernel never routes it a larger packet), up, IPv6 off on
#     it, rp_filter 0 on it (its sources are the clients', reached through the tunnel);
#   - routing table 6081: default dev gwlb0. One-arm: "iif gwlb0 lookup 6081", so what comes
#     out of the tunnel goes back into it. Both modes: "fwmark 0x100/0x100 lookup 6081", so a
#     packet of a connection that came through the tunnel and that the kernel sends itself
#     (REJECT's TCP reset of a denied flow, an ICMP error) or, two-arm, a reply arriving on
#     the public side goes back through the tunnel too, never out of the underlay;
#   - mangle PREROUTING -> EGRESSD_GWLB: a connection seen on gwlb0 gets connmark bit 0x100
#     (apart from egressd's verdict bits 0x3); a packet of such a connection arriving
#     elsewhere gets packet mark 0x100 (routed by the rule above). mangle OUTPUT ->
#     EGRESSD_GWLB_OUT: the same for the kernel's own packets (the mangle table reroutes them);
#   - mangle FORWARD -> EGRESSD_GWLB_FWD: the MSS of every SYN into or out of gwlb0 at most
#     8460 (8500 - 40): the load balancer drops larger packets without an ICMP error, so path
#     MTU discovery cannot find it, and clients in a VPC (MTU 9001) would send larger segments;
#   - raw PREROUTING -> EGRESSD_GWLB_RAW, OUTPUT -> EGRESSD_GWLB_RAWOUT: GENEVE (UDP 6081) on the underlay is not
#     tracked: one conntrack entry per load balancer port and flow would double the table, and
#     the replies go out of a raw socket that conntrack would otherwise NAT. Only off gwlb0:
#     a client's own UDP 6081 stays tracked and filtered.
set -euo pipefail

IPTABLES="${IPTABLES:-iptables}"
TABLE=6081
MARK=0x100
MSS=8460
MTU=8500
PREF_IIF=6081
PREF_MARK=6082

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -euo/d'
}

die() {
	echo "egressd-gwlb-net: $*" >&2
	exit 2
}

cmd="${1:-}"
[ -n "$cmd" ] || { usage >&2; exit 2; }
shift
mode="" ifname="gwlb0"
while [ $# -gt 0 ]; do
	case "$1" in
	--mode) mode="${2:-}"; shift 2 ;;
	--interface) ifname="${2:-}"; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done
[[ "$ifname" =~ ^[A-Za-z0-9_.-]{1,15}$ ]] || die "--interface needs an interface name"

ruleset() {
	cat <<RULES
*raw
:EGRESSD_GWLB_RAW - [0:0]
:EGRESSD_GWLB_RAWOUT - [0:0]
-A EGRESSD_GWLB_RAW ! -i $ifname -p udp --dport 6081 -j CT --notrack
-A EGRESSD_GWLB_RAWOUT -p udp --dport 6081 -j CT --notrack
COMMIT
*mangle
:EGRESSD_GWLB - [0:0]
:EGRESSD_GWLB_OUT - [0:0]
:EGRESSD_GWLB_FWD - [0:0]
-A EGRESSD_GWLB -i $ifname -j CONNMARK --set-xmark $MARK/$MARK
-A EGRESSD_GWLB ! -i $ifname -m connmark --mark $MARK/$MARK -j MARK --set-xmark $MARK/$MARK
-A EGRESSD_GWLB_OUT -m connmark --mark $MARK/$MARK -j MARK --set-xmark $MARK/$MARK
-A EGRESSD_GWLB_FWD -o $ifname -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss $MSS
-A EGRESSD_GWLB_FWD -i $ifname -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss $MSS
COMMIT
RULES
}

# The jumps: table, built-in chain, egressd's chain.
JUMPS=(
	"raw PREROUTING EGRESSD_GWLB_RAW"
	"raw OUTPUT EGRESSD_GWLB_RAWOUT"
	"mangle PREROUTING EGRESSD_GWLB"
	"mangle OUTPUT EGRESSD_GWLB_OUT"
	"mangle FORWARD EGRESSD_GWLB_FWD"
)

rule_pref() {
	ip -4 rule show pref "$1" | grep -q .
}

apply() {
	case "$mode" in
	one-arm | two-arm) ;;
	*) die "--mode must be one-arm or two-arm" ;;
	esac
	if ! ip link show dev "$ifname" >/dev/null 2>&1; then
		ip tuntap add dev "$ifname" mode tun multi_queue
	fi
	ip link set dev "$ifname" mtu "$MTU" up
	sysctl -qw "net.ipv4.conf.$ifname.rp_filter=0"
	if [ -e "/proc/sys/net/ipv6/conf/$ifname" ]; then
		sysctl -qw "net.ipv6.conf.$ifname.disable_ipv6=1"
	fi
	ip -4 route replace default dev "$ifname" table "$TABLE"
	if [ "$mode" = one-arm ]; then
		rule_pref "$PREF_IIF" || ip -4 rule add pref "$PREF_IIF" iif "$ifname" lookup "$TABLE"
	else
		while rule_pref "$PREF_IIF"; do ip -4 rule del pref "$PREF_IIF"; done
	fi
	rule_pref "$PREF_MARK" || ip -4 rule add pref "$PREF_MARK" fwmark "$MARK/$MARK" lookup "$TABLE"
	ruleset | "${IPTABLES}-restore" -w --noflush
	local j table chain target
	for j in "${JUMPS[@]}"; do
		read -r table chain target <<<"$j"
		"$IPTABLES" -w -t "$table" -C "$chain" -j "$target" 2>/dev/null ||
			"$IPTABLES" -w -t "$table" -A "$chain" -j "$target"
	done
	echo "egressd-gwlb-net: applied ($mode, $ifname, table $TABLE, mark $MARK)"
}

remove() {
	local j table chain target n
	for j in "${JUMPS[@]}"; do
		read -r table chain target <<<"$j"
		n=0
		while "$IPTABLES" -w -t "$table" -C "$chain" -j "$target" 2>/dev/null; do
			"$IPTABLES" -w -t "$table" -D "$chain" -j "$target"
			n=$((n + 1))
			[ "$n" -lt 100 ] || die "cannot remove the jump to $target"
		done
		if "$IPTABLES" -w -t "$table" -nL "$target" >/dev/null 2>&1; then
			"$IPTABLES" -w -t "$table" -F "$target"
			"$IPTABLES" -w -t "$table" -X "$target"
		fi
	done
	while rule_pref "$PREF_IIF"; do ip -4 rule del pref "$PREF_IIF"; done
	while rule_pref "$PREF_MARK"; do ip -4 rule del pref "$PREF_MARK"; done
	ip -4 route flush table "$TABLE" 2>/dev/null || true
	if ip link show dev "$ifname" >/dev/null 2>&1; then
		ip tuntap del dev "$ifname" mode tun multi_queue
	fi
	echo "egressd-gwlb-net: removed"
}

status() {
	local missing=0 j table chain target
	if ip link show dev "$ifname" >/dev/null 2>&1; then
		ip -br link show dev "$ifname"
	else
		echo "$ifname: MISSING"
		missing=1
	fi
	ip -4 route show table "$TABLE" | grep -q "dev $ifname" || { echo "table $TABLE: no route into $ifname"; missing=1; }
	rule_pref "$PREF_MARK" || { echo "ip rule fwmark $MARK: MISSING"; missing=1; }
	if rule_pref "$PREF_IIF"; then echo "mode: one-arm (iif $ifname lookup $TABLE)"; else echo "mode: two-arm"; fi
	for j in "${JUMPS[@]}"; do
		read -r table chain target <<<"$j"
		"$IPTABLES" -w -t "$table" -C "$chain" -j "$target" 2>/dev/null || { echo "$table $chain -> $target: MISSING"; missing=1; }
	done
	if [ "$missing" -eq 1 ]; then
		echo "egressd-gwlb-net: status: MISSING (exit 3)" >&2
		return 3
	fi
	echo "egressd-gwlb-net: in place"
}

case "$cmd" in
apply) apply ;;
remove) remove ;;
status) status ;;
-h | --help | help) usage ;;
*) die "unknown command '$cmd' (apply, remove or status)" ;;
esac
