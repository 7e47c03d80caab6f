#!/usr/bin/env bash
# egressd-iptables.sh — install, remove or show egressd's netfilter rules on a NAT instance.
#
# Usage:
#   egressd-iptables.sh apply  --private IF --public IF [--queues FIRST:COUNT] [--fail-open]
#                              [--inspect-tcp 80,443] [--inspect-udp 443] [--source-rate 5000]
#                              [--snat ADDR] [--no-masquerade] [--syn-log-group 10 | --no-syn-log]
#   egressd-iptables.sh remove [--private IF --public IF]
#   egressd-iptables.sh status     exit 0 when every rule is in place; 3 when some are missing;
#                                  4 when a rule runs before one of egressd's jumps (it is named)
#
# Inputs (environment): IPTABLES (default "iptables"; "iptables-legacy" or "iptables-nft"
# to choose a backend; never mix the two in one namespace), IP6TABLES (default derived
# from IPTABLES).
#
# What apply installs (design.md, "Rule layout"), in egressd's own chains. A connection is
# undecided while its connmark is 0 under 0x3:
#   filter FORWARD -> EGRESSD:
#     conntrack INVALID                        DROP    (a packet the server would discard decides nothing)
#     packet marked by a verdict               CONNMARK --save-mark (then the two rules below act on it)
#     connection marked allow (0x1/0x3)        ACCEPT  (the fast path: all but the first packets)
#     connection marked deny  (0x2/0x3)        REJECT tcp-reset (TCP), DROP (others)
#     RELATED ICMP (an error about an undecided flow) -> EGRESSD_ICMP:
#       destination unreachable, public -> private (REPLY),
#         no longer than the header it quotes  ACCEPT  (path MTU, unreachables; the bound below)
#       anything else                          DROP    (see --fail-open)
#     private -> public TCP SYN -> EGRESSD_SYN:
#       to a port in ipset egressd-syn, no payload -> EGRESSD_SYNLOG: a source over
#                                              --source-rate DROP, NFLOG (group --syn-log-group), ACCEPT
#       others                                 EGRESSD_Q (CIDR-only flows are decided on the SYN)
#     private -> public TCP -> EGRESSD_HEAD:
#       no payload, a bare header (below)      ACCEPT  (the handshake's ACK: nothing to decide)
#       no payload, any other header           DROP    (options an undecided flow has no use for; see --fail-open)
#       with payload                           EGRESSD_Q
#     private -> public UDP                    EGRESSD_Q
#     EGRESSD_Q: a source over --source-rate packets/s DROP, the rest NFQUEUE (below)
#     public -> private TCP -> EGRESSD_REPLY:
#       SYN flag, no payload                   ACCEPT  (the SYN-ACK; its options stripped in mangle)
#       no payload, a bare header              ACCEPT
#       anything else                          DROP    (reply bytes before the decision; see --fail-open)
#     public -> private UDP                    DROP    (see --fail-open)
#     anything else                            DROP    (inbound, ICMP echo, other protocols, ...)
#   mangle PREROUTING -> EGRESSD_PRE: undecided private packets to inspected ports get TTL 64,
#     so a packet egressd reads is a packet that reaches the server.
#   mangle FORWARD -> EGRESSD_FWD: TCP of undecided flows, both directions: TCPOPTSTRIP of
#     every option kind but MSS, window scale, SACK-permitted and timestamps.
#   nat POSTROUTING -> EGRESSD_NAT: MASQUERADE out of the public interface; with --snat ADDR,
#     forwarded packets (a source that is not local) are SNATed to ADDR instead: the HA pair's
#     floating address, the same on both members, so a connection conntrackd copied to the
#     standby keeps its NAT mapping there (README, "High availability"). The instance's own
#     traffic keeps its own address. None with --no-masquerade: behind a Gateway Load Balancer
#     in one-arm mode, allowed flows go back to it untranslated, and
#     scripts/gwlb/egressd-gwlb-net.sh describes the rest.
#   ip6tables filter FORWARD -> EGRESSD: DROP (IPv6 is not filtered, so it is never forwarded).
#   sysctl net.netfilter.nf_conntrack_tcp_loose=0: TCP without a handshake is INVALID.
#
# SYNs without a round trip (--syn-log-group, on by default): a SYN is queued so that the
# policy can decide the flow on it (an address rule, a port that carries no name, a
# destination every rule denies: such a SYN is rejected and never reaches its server), and so
# that egressd learns the flow's initial sequence number, where its hello starts. On a port
# where the policy decides no SYN (every SYN would pass undecided), only the second reason
# holds, and the SYN need not wait: egressd keeps those TCP ports in the ipset egressd-syn
# (created here, empty; filled by egressd from its policy, emptied when it stops), and a SYN
# to one of them is logged to NFLOG group --syn-log-group and forwarded at once. egressd
# reads the log before it starts a flow from a data segment, so the flow's head is still
# anchored at its true ISN; a flow whose SYN it never saw (the log overflowed) is denied. An
# empty set, or --no-syn-log, queues every SYN as before. Needs the ipset tool.
#
# Each source's share of the queues: egressd gives every source a fair share of what it
# holds, but the kernel's queue fills at the rate packets arrive, whoever sends them, and a
# full queue drops everyone's new flows (or, with --fail-open, accepts them unmarked). So what
# goes to the queues passes a per-source rate first (hashlimit by source address, in
# EGRESSD_Q): past --source-rate packets per second (bursts of twice as many; default 5000,
# far above what one host's new flows need: two queued packets per TCP flow, the SYN and its
# hello; 0 turns it off) a source's packets are dropped before the queue, failing closed for
# that source alone; its clients retransmit. Keep the rate below what egressd decides per
# second on this instance (make bench-lab), so that no single source can fill the queues.
#
# Nothing the two ends choose crosses an undecided flow but the handshake. Its segments carry
# no payload (tested exactly, below), and their TCP options are limited twice:
#  - mangle FORWARD overwrites with NOPs every option but MSS (2), window scale (3),
#    SACK-permitted (4) and timestamps (8): experimental 253/254, MPTCP (30), TCP Fast Open
#    (34), MD5 (19), TCP-AO (29) and every unassigned kind. Every SYN crosses before its flow
#    is decided (a CIDR-only flow's too: the verdict comes in filter, after mangle), so these
#    never reach a server: TFO and MPTCP fall back to plain TCP, and MD5/AO cannot cross a NAT
#    anyway (they sign the addresses MASQUERADE rewrites). SACK blocks (5) go too: before the
#    decision no payload crosses in either direction, so there is nothing to acknowledge
#    selectively, and each block is 8 bytes of free choice.
#  - TCPOPTSTRIP goes by kind and believes the length byte, so a kept kind with a forged
#    length (a 38-byte "timestamp") or a repeated one would still carry data. So a payload-less
#    segment other than a SYN must be bare: a 20-byte TCP header, or a 32-byte one whose
#    options are exactly NOP, NOP, timestamps (RFC 7323 Appendix A's layout, which Linux, the
#    BSDs, macOS and Windows send), with the urgent pointer 0 in both. Anything else is
#    dropped. A SYN's options cannot be pinned this way (every stack orders them its own way),
#    so the SYN and SYN-ACK, stripped, remain: the README's "what a name filter cannot stop"
#    names them with the other residual channels (sequence numbers, IP ID, window, timestamp
#    values, timing), all bounded by the life of an undecided flow (hello.timeout).
# A decided flow is untouched: the strip matches connmark 0 only, and its packets take the
# connmark ACCEPT before any of the tests above.
#
# ICMP errors about an undecided flow (conntrack finds the flow they quote: RELATED, with the
# flow's connmark) cross only as path MTU discovery and unreachables need: destination
# unreachable (type 3, every code: fragmentation needed, host, port, administratively
# prohibited), only toward the client (the REPLY direction: about a packet the client sent),
# and no longer than the header they quote: 20 (IPv4, no options) + 8 (ICMP) + 20 (the quoted
# IPv4 header, no options) + T, where T is 8, RFC 792's "first 64 bits" (the ports and the
# TCP sequence number: all a receiving stack reads), or, for a quoted TCP segment, exactly
# its header, 4 * its data offset (RFC 1812 routers, Linux among them, quote up to 576 bytes,
# which for the payload-less segments an undecided flow sends is their whole header). That is
# 56 bytes, or 68 to 108 for TCP, tested exactly with u32; one byte more is dropped, and so
# is every other type (time exceeded, parameter problem, source quench, redirect) and every
# error toward the server. What stays free in an error that passes (its code, the 4 bytes
# after its checksum, the quoted header's fields and a quoted SYN's options, at most 40
# bytes) is among the residual channels the README names. Errors about a decided flow meet
# the connmark rules first: an allowed flow gets them whole (a router's 576-byte
# "fragmentation needed" about a full-size segment: path MTU discovery works), a denied flow
# none.

# The direction of a packet is conntrack's (ORIGINAL: from the client that opened the flow;
# REPLY: from the server), so --private and --public may name the same interface: a NAT
# instance with one ENI receives from the private subnets and sends to the internet gateway
# on it. With two interfaces, -i/-o restrict each rule further.
#
# "No payload" is tested exactly (IPv4 header of 20 bytes and total length = 20 + the TCP
# header): a length range would let a short server banner through. Packets with IP options
# count as payload.
#
# The NFQUEUE rules use --queue-bypass only with --fail-open: then, with no egressd reading,
# new flows pass unfiltered. Without it they are dropped (fail closed). With --fail-open what
# an undecided flow must not pass (replies with payload, payload-less segments that are not
# bare, in either direction, ICMP errors beyond the bound below) goes to one more queue, FIRST+COUNT, instead of DROP: egressd
# drops every packet there while it runs (nothing crosses before the decision), and while it
# is down the bypass lets the packets of unfiltered flows through. Such flows stay undecided,
# so their SACK blocks are stripped for their whole life (loss recovery is slower, not
# broken), and their ICMP errors take the bypass too (path MTU discovery works).
#
# Each jump must be the first rule of its built-in chain: a rule above it sees the packets
# first, and one that accepts them (an "ESTABLISHED,RELATED -j ACCEPT" from Docker, firewalld or
# an AMI's own rules, above the jump in filter FORWARD) lets every flow past egressd once its SYN
# is through. apply puts each jump on top, moving it there if it is elsewhere (the new copy goes
# in and the old ones come out in one transaction, so the chain is never without it; other
# rules stay, below it). status fails (exit 4) and names every rule found above the filter and
# mangle jumps; above nat POSTROUTING's it only warns (a rule there changes the NAT, not what
# the filter lets through). Rules added after apply (Docker restarts re-insert theirs on top)
# need apply again: run status from monitoring.
#
# apply is idempotent: the chains are replaced atomically (iptables-restore --noflush) and
# each jump ends up once, on top. remove leaves nothing of egressd.
set -euo pipefail

IPTABLES="${IPTABLES:-iptables}"
IP6TABLES="${IP6TABLES:-${IPTABLES/iptables/ip6tables}}"

# Verdict marks: must match nfq.DefaultMarks.
MARK_ALLOW=0x1
MARK_DENY=0x2
MARK_MASK=0x3

CHAINS_FILTER=(EGRESSD EGRESSD_SYN EGRESSD_SYNLOG EGRESSD_HEAD EGRESSD_REPLY EGRESSD_ICMP EGRESSD_Q) # each before those it jumps to

# The ipset of TCP ports whose SYNs are logged and forwarded, not queued: egressd fills it
# (nfq.SYNPortSetName) with the ports where its policy decides no SYN.
SYN_SET=egressd-syn

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -euo/d'
}

die() {
	echo "egressd-iptables: $*" >&2
	exit 2
}

cmd="${1:-}"
[ -n "$cmd" ] || { usage >&2; exit 2; }
shift

private="" public="" queues="0:2" fail_open=0 inspect_tcp="80,443" inspect_udp="443" source_rate=5000 snat="" masquerade=1 syn_log_group=10
while [ $# -gt 0 ]; do
	case "$1" in
	--private) private="${2:-}"; shift 2 ;;
	--public) public="${2:-}"; shift 2 ;;
	--queues) queues="${2:-}"; shift 2 ;;
	--fail-open) fail_open=1; shift ;;
	--inspect-tcp) inspect_tcp="${2:-}"; shift 2 ;;
	--inspect-udp) inspect_udp="${2:-}"; shift 2 ;;
	--source-rate) source_rate="${2:-}"; shift 2 ;;
	--syn-log-group) syn_log_group="${2:-}"; shift 2 ;;
	--no-syn-log) syn_log_group=""; shift ;;
	--snat) snat="${2:-}"; shift 2 ;;
	--no-masquerade) masquerade=0; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done

valid_if() { [[ "$1" =~ ^[A-Za-z0-9_.@-]{1,15}$ ]]; }
valid_ports() { [[ -z "$1" || "$1" =~ ^[0-9]{1,5}(,[0-9]{1,5}){0,14}$ ]]; }

# reply_target prints what happens to reply packets with payload of undecided flows.
reply_target() {
	if [ "$fail_open" -eq 1 ]; then
		echo "NFQUEUE --queue-num $((${queues%%:*} + ${queues##*:})) --queue-bypass"
	else
		echo "DROP"
	fi
}

# queue_target prints the NFQUEUE target for the configured queues.
queue_target() {
	local first="${queues%%:*}" count="${queues##*:}"
	local target
	if [ "$count" -eq 1 ]; then
		target="NFQUEUE --queue-num $first"
	else
		target="NFQUEUE --queue-balance $first:$((first + count - 1))"
	fi
	if [ "$fail_open" -eq 1 ]; then
		target="$target --queue-bypass"
	fi
	echo "$target"
}

# strip_options prints the TCP option kinds stripped from undecided flows: every kind but
# EOL and NOP (0, 1: TCPOPTSTRIP refuses them), MSS (2), window scale (3), SACK-permitted (4)
# and timestamps (8).
strip_options() {
	local k list=""
	for k in $(seq 5 255); do
		[ "$k" -eq 8 ] || list="$list,$k"
	done
	echo "${list#,}"
}

# bare_matches prints the u32 matches of the two payload-less TCP segments an undecided flow
# sends after its handshake: a 20-byte header (no options), or a 32-byte one whose options
# are NOP, NOP, timestamps (RFC 7323 Appendix A's layout: Linux, the BSDs, macOS and Windows
# all send it); in both the urgent pointer is 0. IPv4 header of 20 bytes.
bare_matches() {
	echo "-m u32 --u32 0>>24=0x45&&0&0xFFFF=40&&32>>28=5&&36&0xFFFF=0"
	echo "-m u32 --u32 0>>24=0x45&&0&0xFFFF=52&&32>>28=8&&36&0xFFFF=0&&40=0x0101080A"
}

# icmp_quote_matches prints the u32 matches of an ICMP error that holds nothing after the
# header it quotes: a 20-byte IPv4 header, the 8-byte ICMP header and a quoted 20-byte IPv4
# header, then either 8 bytes of the quoted datagram (RFC 792: ports and, for TCP, the
# sequence number; 56 bytes in all) or, for a quoted TCP segment, its whole header as its
# data offset gives it (RFC 1812 routers quote as much as fits in 576 bytes, and a segment
# that crosses an undecided flow has no payload; 68 to 108 bytes).
icmp_quote_matches() {
	local doff
	echo "-m u32 --u32 0>>24=0x45&&0&0xFFFF=56&&28>>24=0x45"
	for doff in $(seq 5 15); do
		echo "-m u32 --u32 0>>24=0x45&&0&0xFFFF=$((48 + 4 * doff))&&28>>24=0x45&&36>>16&0xFF=6&&60>>28=$doff"
	done
}

# no_payload_matches prints one u32 match per TCP data offset (5..15) that is true exactly
# when an IPv4 packet with a 20-byte header carries a TCP segment without payload.
no_payload_matches() {
	local doff
	for doff in $(seq 5 15); do
		echo "-m u32 --u32 0>>24=0x45&&0&0xFFFF=$((20 + 4 * doff))&&32>>28=$doff"
	done
}

ruleset_filter() {
	local q r
	q="$(queue_target)"
	r="$(reply_target)"
	cat <<RULES
*filter
:EGRESSD - [0:0]
:EGRESSD_HEAD - [0:0]
:EGRESSD_REPLY - [0:0]
:EGRESSD_ICMP - [0:0]
:EGRESSD_Q - [0:0]
:EGRESSD_SYN - [0:0]
:EGRESSD_SYNLOG - [0:0]
-A EGRESSD -m conntrack --ctstate INVALID -j DROP
-A EGRESSD -m mark ! --mark 0x0/$MARK_MASK -j CONNMARK --save-mark --nfmask $MARK_MASK --ctmask $MARK_MASK
-A EGRESSD -m connmark --mark $MARK_ALLOW/$MARK_MASK -j ACCEPT
-A EGRESSD -p tcp -m connmark --mark $MARK_DENY/$MARK_MASK -j REJECT --reject-with tcp-reset
-A EGRESSD -m connmark --mark $MARK_DENY/$MARK_MASK -j DROP
-A EGRESSD -p icmp -m conntrack --ctstate RELATED -j EGRESSD_ICMP
-A EGRESSD -i $private -o $public -m conntrack --ctdir ORIGINAL -p tcp --syn -j EGRESSD_SYN
-A EGRESSD -i $private -o $public -m conntrack --ctdir ORIGINAL -p tcp -j EGRESSD_HEAD
-A EGRESSD -i $private -o $public -m conntrack --ctdir ORIGINAL -p udp -j EGRESSD_Q
-A EGRESSD -i $public -o $private -m conntrack --ctdir REPLY -p tcp -j EGRESSD_REPLY
-A EGRESSD -i $public -o $private -m conntrack --ctdir REPLY -p udp -j $r
-A EGRESSD -j DROP
RULES
	local m
	while read -r m; do
		echo "-A EGRESSD_HEAD $m -j ACCEPT"
	done < <(bare_matches)
	while read -r m; do
		echo "-A EGRESSD_HEAD $m -j $r"
	done < <(no_payload_matches)
	echo "-A EGRESSD_HEAD -j EGRESSD_Q"
	if [ "$source_rate" -gt 0 ]; then
		echo "-A EGRESSD_Q -m hashlimit --hashlimit-above $source_rate/sec --hashlimit-burst $((2 * source_rate)) --hashlimit-mode srcip --hashlimit-name egressd-src --hashlimit-htable-max 65536 --hashlimit-htable-expire 10000 -j DROP"
	fi
	echo "-A EGRESSD_Q -j $q"
	# SYNs: to a port of the SYN set and without payload (tested exactly: a SYN that carries
	# data, TCP Fast Open or crafted, is queued like any payload), logged for egressd and
	# forwarded at once (the rate above first); the rest queued, to be decided on the SYN
	# where the policy does so.
	if [ -n "$syn_log_group" ]; then
		while read -r m; do
			echo "-A EGRESSD_SYN -m set --match-set $SYN_SET dst $m -j EGRESSD_SYNLOG"
		done < <(no_payload_matches)
		if [ "$source_rate" -gt 0 ]; then
			echo "-A EGRESSD_SYNLOG -m hashlimit --hashlimit-above $source_rate/sec --hashlimit-burst $((2 * source_rate)) --hashlimit-mode srcip --hashlimit-name egressd-src --hashlimit-htable-max 65536 --hashlimit-htable-expire 10000 -j DROP"
		fi
		echo "-A EGRESSD_SYNLOG -j NFLOG --nflog-group $syn_log_group --nflog-size 80"
		echo "-A EGRESSD_SYNLOG -j ACCEPT"
	fi
	echo "-A EGRESSD_SYN -j EGRESSD_Q"
	while read -r m; do
		echo "-A EGRESSD_REPLY -p tcp --tcp-flags SYN SYN $m -j ACCEPT"
	done < <(no_payload_matches)
	while read -r m; do
		echo "-A EGRESSD_REPLY $m -j ACCEPT"
	done < <(bare_matches)
	echo "-A EGRESSD_REPLY -j $r"
	while read -r m; do
		echo "-A EGRESSD_ICMP -i $public -o $private -p icmp --icmp-type destination-unreachable -m conntrack --ctdir REPLY $m -j ACCEPT"
	done < <(icmp_quote_matches)
	echo "-A EGRESSD_ICMP -j $r"
	echo "COMMIT"
}

ruleset_mangle() {
	echo "*mangle"
	echo ":EGRESSD_PRE - [0:0]"
	echo ":EGRESSD_FWD - [0:0]"
	echo "-A EGRESSD_FWD -p tcp -m connmark --mark 0x0/$MARK_MASK -j TCPOPTSTRIP --strip-options $(strip_options)"
	if [ -n "$inspect_tcp" ]; then
		echo "-A EGRESSD_PRE -i $private -m conntrack --ctdir ORIGINAL -p tcp -m multiport --dports $inspect_tcp -m connmark --mark 0x0/$MARK_MASK -j TTL --ttl-set 64"
	fi
	if [ -n "$inspect_udp" ]; then
		echo "-A EGRESSD_PRE -i $private -m conntrack --ctdir ORIGINAL -p udp -m multiport --dports $inspect_udp -m connmark --mark 0x0/$MARK_MASK -j TTL --ttl-set 64"
	fi
	echo "COMMIT"
}

ruleset_nat() {
	echo "*nat"
	echo ":EGRESSD_NAT - [0:0]"
	if [ -n "$snat" ]; then
		echo "-A EGRESSD_NAT -o $public -m addrtype ! --src-type LOCAL -j SNAT --to-source $snat"
	fi
	if [ "$masquerade" -eq 1 ]; then
		echo "-A EGRESSD_NAT -o $public -j MASQUERADE"
	fi
	echo "COMMIT"
}

ruleset_ip6() {
	cat <<RULES
*filter
:EGRESSD - [0:0]
-A EGRESSD -j DROP
COMMIT
RULES
}

# chain_rules TOOL TABLE CHAIN prints CHAIN's rules in order, one a line, as -S shows them.
chain_rules() {
	"$1" -w -t "$2" -S "$3" | grep '^-A ' || true
}

# ensure_first TOOL TABLE CHAIN TARGET: make "-j TARGET" the first rule of CHAIN, and its
# only copy. A rule above it sees every packet first: in filter FORWARD an
# "ESTABLISHED,RELATED -j ACCEPT" (Docker's, firewalld's, an AMI's own) passes every flow
# past egressd once its SYN is through. The jump goes in on top and the other copies come
# out in one iptables-restore transaction, so the chain is never without it; other rules
# stay, below it.
ensure_first() {
	local tool="$1" table="$2" chain="$3" target="$4"
	local jump="-A $3 -j $4" rules nums n
	rules="$(chain_rules "$tool" "$table" "$chain")"
	if [ "$(head -n 1 <<<"$rules")" = "$jump" ] && [ "$(grep -cxF -- "$jump" <<<"$rules")" -eq 1 ]; then
		return 0
	fi
	# The old copies' rule numbers, highest first, counted after the insert.
	nums="$(grep -nxF -- "$jump" <<<"$rules" | cut -d: -f1 | sort -rn || true)"
	{
		echo "*$table"
		echo "-I $chain 1 -j $target"
		for n in $nums; do
			echo "-D $chain $((n + 1))"
		done
		echo "COMMIT"
	} | "${tool}-restore" -w --noflush
}

# drop_jump TOOL TABLE CHAIN TARGET: delete every "-j TARGET" from CHAIN.
drop_jump() {
	local n=0
	while "$1" -w -t "$2" -C "$3" -j "$4" 2>/dev/null; do
		"$1" -w -t "$2" -D "$3" -j "$4"
		n=$((n + 1))
		[ "$n" -lt 100 ] || die "cannot remove the jump to $4 from $2/$3"
	done
}

# drop_chain TOOL TABLE CHAIN: flush and delete CHAIN if it exists.
drop_chain() {
	if "$1" -w -t "$2" -nL "$3" >/dev/null 2>&1; then
		"$1" -w -t "$2" -F "$3"
		"$1" -w -t "$2" -X "$3"
	fi
}

set_tcp_loose() {
	local f=/proc/sys/net/netfilter/nf_conntrack_tcp_loose
	[ -e "$f" ] || modprobe nf_conntrack 2>/dev/null || true
	[ -e "$f" ] || die "conntrack is not loaded ($f missing)"
	echo "$1" >"$f"
}

apply() {
	valid_if "$private" || die "--private needs an interface name"
	valid_if "$public" || die "--public needs an interface name"
	[[ "$queues" =~ ^[0-9]+:[0-9]+$ ]] || die "--queues must be FIRST:COUNT, like 0:2"
	local first="${queues%%:*}" count="${queues##*:}"
	if [ "$count" -lt 1 ] || [ $((first + count + fail_open)) -gt 65536 ]; then
		die "--queues $queues is out of range"
	fi
	valid_ports "$inspect_tcp" || die "--inspect-tcp must be a comma-separated port list"
	valid_ports "$inspect_udp" || die "--inspect-udp must be a comma-separated port list"
	[[ "$source_rate" =~ ^[0-9]{1,7}$ ]] || die "--source-rate must be packets per second per source (0: no limit)"
	[[ -z "$snat" || "$snat" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]] || die "--snat must be an IPv4 address"

	if [ -n "$syn_log_group" ]; then
		if ! [[ "$syn_log_group" =~ ^[0-9]{1,5}$ ]] || [ "$syn_log_group" -gt 65535 ]; then
			die "--syn-log-group must be an NFLOG group, 0..65535"
		fi
		command -v ipset >/dev/null || die "--syn-log-group needs the ipset tool (package ipset), or --no-syn-log"
		# Created empty; egressd fills it. An existing one keeps its ports.
		ipset create "$SYN_SET" bitmap:port range 0-65535 -exist
	fi
	# Chains first (atomically, per table), then the jumps into them.
	ruleset_filter | "${IPTABLES}-restore" -w --noflush
	ruleset_mangle | "${IPTABLES}-restore" -w --noflush
	ruleset_nat | "${IPTABLES}-restore" -w --noflush
	ruleset_ip6 | "${IP6TABLES}-restore" -w --noflush
	ensure_first "$IP6TABLES" filter FORWARD EGRESSD
	ensure_first "$IPTABLES" filter FORWARD EGRESSD
	ensure_first "$IPTABLES" mangle PREROUTING EGRESSD_PRE
	ensure_first "$IPTABLES" mangle FORWARD EGRESSD_FWD
	ensure_first "$IPTABLES" nat POSTROUTING EGRESSD_NAT
	set_tcp_loose 0
	echo "egressd-iptables: applied (private $private, public $public, queues $queues, fail-open $fail_open, source-rate $source_rate/s${snat:+, snat $snat}, syn-log-group ${syn_log_group:-off})"
}

remove() {
	drop_jump "$IPTABLES" filter FORWARD EGRESSD
	drop_jump "$IPTABLES" mangle PREROUTING EGRESSD_PRE
	drop_jump "$IPTABLES" mangle FORWARD EGRESSD_FWD
	drop_jump "$IPTABLES" nat POSTROUTING EGRESSD_NAT
	drop_jump "$IP6TABLES" filter FORWARD EGRESSD
	local c
	for c in "${CHAINS_FILTER[@]}"; do
		drop_chain "$IPTABLES" filter "$c"
	done
	drop_chain "$IPTABLES" mangle EGRESSD_PRE
	drop_chain "$IPTABLES" mangle EGRESSD_FWD
	drop_chain "$IPTABLES" nat EGRESSD_NAT
	drop_chain "$IP6TABLES" filter EGRESSD
	if command -v ipset >/dev/null && ipset list -n "$SYN_SET" >/dev/null 2>&1; then
		ipset destroy "$SYN_SET"
	fi
	if [ -e /proc/sys/net/netfilter/nf_conntrack_tcp_loose ]; then
		set_tcp_loose 1
	fi
	echo "egressd-iptables: removed"
}

# check_jump TOOL TABLE CHAIN TARGET WHAT [warn]: print whether CHAIN jumps to TARGET and
# whether anything runs before the jump (naming each rule that does). Sets missing=1 when the
# jump is absent and misplaced=1 when rules precede it, unless "warn" says a rule there
# cannot let a packet past the filter (then it only prints a warning).
check_jump() {
	local tool="$1" table="$2" chain="$3" target="$4" what="$5" mode="${6:-}"
	local jump="-A $3 -j $4" rules above
	rules="$(chain_rules "$tool" "$table" "$chain")"
	if ! grep -qxF -- "$jump" <<<"$rules"; then
		echo "$what: MISSING (egressd-iptables.sh apply installs it)"
		missing=1
		return 0
	fi
	above="$(awk -v j="$jump" '$0 == j { exit } { print }' <<<"$rules")"
	if [ -z "$above" ]; then
		echo "$what: present, first in $table $chain"
		return 0
	fi
	if [ "$mode" = warn ]; then
		echo "$what: present; WARNING: these rules of $table $chain run before it (they cannot let a packet past the filter, but can change the NAT):"
	else
		echo "$what: NOT FIRST: these rules of $table $chain run before egressd's jump, and one that accepts a packet skips egressd for it:"
		misplaced=1
	fi
	awk '{ print "    " $0 }' <<<"$above"
	echo "  fix: run egressd-iptables.sh apply again (it moves egressd's jump on top and keeps these rules"
	echo "  below it), and find what put them there (Docker, firewalld, the AMI): its next restart may do it again"
}

status() {
	local missing=0 misplaced=0
	check_jump "$IPTABLES" filter FORWARD EGRESSD "filter FORWARD -> EGRESSD"
	if [ "$missing" -eq 0 ]; then
		"$IPTABLES" -w -t filter -vnL EGRESSD
	fi
	check_jump "$IPTABLES" mangle PREROUTING EGRESSD_PRE "mangle PREROUTING -> EGRESSD_PRE (TTL)"
	check_jump "$IPTABLES" mangle FORWARD EGRESSD_FWD "mangle FORWARD -> EGRESSD_FWD (TCP options)"
	check_jump "$IPTABLES" nat POSTROUTING EGRESSD_NAT "nat POSTROUTING -> EGRESSD_NAT" warn
	check_jump "$IP6TABLES" filter FORWARD EGRESSD "ip6tables FORWARD -> EGRESSD (drop)"
	local f=/proc/sys/net/netfilter/nf_conntrack_tcp_loose
	[ -e "$f" ] && echo "nf_conntrack_tcp_loose: $(cat "$f")"
	if command -v ipset >/dev/null && ipset list -n "$SYN_SET" >/dev/null 2>&1; then
		echo "TCP ports whose SYNs are logged and forwarded, not queued (ipset $SYN_SET, kept by egressd): $(ipset list "$SYN_SET" | sed -n '/^Members:/,$p' | tail -n +2 | tr '\n' ' ')"
	fi
	if [ -r /proc/net/netfilter/nfnetlink_queue ]; then
		echo "queues (number, reader port id, waiting, copy mode, copy range, queue dropped, user dropped):"
		awk '{ printf "  %s %s %s %s %s %s %s\n", $1, $2, $3, $4, $5, $6, $7 }' /proc/net/netfilter/nfnetlink_queue
	fi
	if [ "$missing" -eq 1 ]; then
		echo "egressd-iptables: status: rules MISSING (exit 3)" >&2
		return 3
	fi
	if [ "$misplaced" -eq 1 ]; then
		echo "egressd-iptables: status: a rule runs before egressd's jump and can bypass it (exit 4)" >&2
		return 4
	fi
}

case "$cmd" in
apply) apply ;;
remove) remove ;;
status) status ;;
-h | --help | help) usage ;;
*) die "unknown command '$cmd' (apply, remove or status)" ;;
esac
