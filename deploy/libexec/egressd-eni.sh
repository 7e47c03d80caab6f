#!/usr/bin/env bash
# egressd-eni.sh — attach the static ENI that the private route tables point at,
# and carry all of the NAT's traffic through it.
#
# The Terraform example gives each AZ one ENI (source/destination check off, an
# Elastic IP) and an auto-scaling group of one instance, tagged egressd-eni=<id>.
# The route tables' 0.0.0.0/0 targets that ENI, so a replacement instance takes
# over by attaching it: this script, run at boot by egressd-eni.service.
#
# Steps: read the tag from the instance metadata (IMDSv2); attach the ENI as
# device 1, waiting while a dying predecessor still holds it; wait for its
# interface (by MAC address) and its IPv4 address; route the default through it
# (metric 10, ahead of the primary ENI's), so packets from the private subnets
# come in and go out on that one interface with the Elastic IP; write
# PRIVATE_IF=PUBLIC_IF=<interface> for egressd-iptables.service.
#
# Usage: egressd-eni.sh            (as root; no arguments)
#
# Inputs (environment, for tests and odd setups):
#   IMDS_ENDPOINT        default http://169.254.169.254
#   EGRESSD_ENI_OUT      default /run/egressd/interfaces.env
#   EGRESSD_ENI_TRIES    attempts to attach, and seconds to wait for the link (default 120)
#   EGRESSD_ENI_SLEEP    seconds between attempts (default 5)
# Needs: curl, the AWS CLI (aws), ip; the instance role may
# ec2:AttachNetworkInterface and ec2:DescribeNetworkInterfaces.
#
# Exit status: 0 when there is no egressd-eni tag (nothing to do) or the ENI
# carries the default route; 1 with the reason otherwise.
set -euo pipefail

IMDS="${IMDS_ENDPOINT:-http://169.254.169.254}"
OUT="${EGRESSD_ENI_OUT:-/run/egressd/interfaces.env}"
TRIES="${EGRESSD_ENI_TRIES:-120}"
SLEEP="${EGRESSD_ENI_SLEEP:-5}"
ROUTE_METRIC=10

die() {
	echo "egressd-eni: $*" >&2
	exit 1
}

token=""
imds_token() {
	token="$(curl -sS -f -m 5 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 600" "$IMDS/latest/api/token")" ||
		die "no IMDSv2 token from $IMDS"
}

# imds PATH prints a metadata value; status 22 (curl -f) when it is absent.
imds() {
	curl -sS -f -m 5 -H "X-aws-ec2-metadata-token: $token" "$IMDS/latest/meta-data/$1"
}

ip2int() {
	local a b c d
	IFS=. read -r a b c d <<<"$1"
	echo $(((a << 24) | (b << 16) | (c << 8) | d))
}

int2ip() {
	echo "$((($1 >> 24) & 255)).$((($1 >> 16) & 255)).$((($1 >> 8) & 255)).$(($1 & 255))"
}

# subnet_router CIDR prints the VPC router's address: the subnet's base + 1.
subnet_router() {
	local net="${1%/*}" len="${1#*/}"
	[[ "$net" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ && "$len" =~ ^[0-9]+$ ]] || die "bad subnet '$1'"
	local mask=$(((0xFFFFFFFF << (32 - len)) & 0xFFFFFFFF))
	int2ip $((($(ip2int "$net") & mask) + 1))
}

# link_by_mac MAC prints the interface with that address, if any.
link_by_mac() {
	local f
	for f in /sys/class/net/*/address; do
		if [ "$(cat "$f")" = "$1" ]; then
			basename "$(dirname "$f")"
			return 0
		fi
	done
	return 1
}

main() {
	imds_token
	local eni
	if ! eni="$(imds tags/instance/egressd-eni 2>/dev/null)"; then
		echo "egressd-eni: no egressd-eni instance tag (or instance_metadata_tags disabled): nothing to attach"
		return 0
	fi
	[[ "$eni" =~ ^eni-[0-9a-f]{8,17}$ ]] || die "tag egressd-eni is '$eni', not an ENI id"
	local instance region
	instance="$(imds instance-id)" || die "no instance-id in the metadata"
	region="$(imds placement/region)" || die "no region in the metadata"

	local i desc mac="" status="" owner=""
	for ((i = 1; i <= TRIES; i++)); do
		desc="$(aws ec2 describe-network-interfaces --region "$region" \
			--network-interface-ids "$eni" --output text \
			--query 'NetworkInterfaces[0].[MacAddress,Status,Attachment.InstanceId]')" ||
			die "cannot describe $eni"
		read -r mac status owner <<<"$desc"
		if [ "$owner" = "$instance" ]; then
			break
		fi
		if [ "$status" = available ]; then
			# A race with another instance is possible; the next round sees who won.
			aws ec2 attach-network-interface --region "$region" --network-interface-id "$eni" \
				--instance-id "$instance" --device-index 1 >/dev/null ||
				echo "egressd-eni: attaching $eni failed (try $i of $TRIES)" >&2
		else
			echo "egressd-eni: $eni is $status (attached to ${owner}); waiting (try $i of $TRIES)"
		fi
		sleep "$SLEEP"
	done
	[ "$owner" = "$instance" ] || die "$eni is still not attached to $instance after $TRIES tries"
	mac="${mac,,}"

	local ifname="" addr=""
	for ((i = 1; i <= TRIES; i++)); do
		if [ -z "$ifname" ]; then
			ifname="$(link_by_mac "$mac")" || ifname=""
		fi
		if [ -n "$ifname" ]; then
			addr="$(ip -4 -o addr show dev "$ifname" scope global | awk '{ print $4; exit }')"
			[ -z "$addr" ] || break
		fi
		sleep 1
	done
	[ -n "$ifname" ] || die "$eni is attached but no interface has its MAC $mac"
	[ -n "$addr" ] || die "$ifname ($eni) has no IPv4 address"

	local cidr gw
	cidr="$(imds "network/interfaces/macs/$mac/subnet-ipv4-cidr-block")" || die "no subnet for $mac in the metadata"
	gw="$(subnet_router "$cidr")"
	ip route replace default via "$gw" dev "$ifname" metric "$ROUTE_METRIC"

	mkdir -p "$(dirname "$OUT")"
	printf 'PRIVATE_IF=%s\nPUBLIC_IF=%s\n' "$ifname" "$ifname" >"$OUT.tmp"
	mv -f "$OUT.tmp" "$OUT"
	echo "egressd-eni: $eni is $ifname ($addr); default route via $gw; wrote $OUT"
}

main "$@"
