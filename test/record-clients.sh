#!/usr/bin/env bash
# record-clients.sh — record the first flight of real clients (TLS
# ClientHellos, one HTTP request head) as pcaps, for pkg/classify's fixtures.
#
# Usage: test/record-clients.sh [OUTDIR]     (default: pkg/classify/testdata)
#   Run as root, once; commit the pcaps it writes. Needs ip, ethtool,
#   tcpdump, curl, openssl, go; chromium is recorded when it is installed
#   (apt-get install chromium), skipped with a message otherwise.
#
# Topology: one network namespace of its own, nothing else.
#
#   egr-rec-PID:  lo 127.0.0.1, MTU 1500, TSO/GSO/GRO off
#                 recordhello serve :443 :80 :8443  (accepts, never answers)
#                 each client -> 127.0.0.1, tcpdump -i lo per client
#
# The MTU and the offloads make a hello larger than 1460 bytes cross lo as
# real segments, as it would cross a NIC. The server never answers, so each
# pcap holds the client's SYN and first flight only. Names are under
# example.test (RFC 6761) and are mapped to 127.0.0.1 inside the namespace.
set -euo pipefail

cd "$(dirname "$0")/.."
outdir="${1:-pkg/classify/testdata}"
ns="egr-rec-$$"
tmp="$(mktemp -d)"
pids=()

cleanup() {
	set +e
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	# Whatever a client left running in the namespace (browser helpers) was
	# started by this script; end it by PID before deleting the namespace.
	for p in $(ip netns pids "$ns" 2>/dev/null); do
		kill "$p" 2>/dev/null
	done
	ip netns del "$ns" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

nsx() { ip netns exec "$ns" "$@"; }

# wait_for CMD...: poll CMD (up to 50 x 0.1 s) until it succeeds.
wait_for() {
	local _
	for _ in $(seq 1 50); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	echo "record-clients: timed out waiting for: $*" >&2
	return 1
}

ip netns add "$ns"
nsx ip link set lo mtu 1500 up
nsx ethtool -K lo tso off gso off gro off >/dev/null

go build -o "$tmp/recordhello" ./test/recordhello
# Background jobs run `ip netns exec` itself (not the nsx function, which
# would fork a subshell): it execs the command, so $! is the process to end.
ip netns exec "$ns" "$tmp/recordhello" serve 127.0.0.1:443 127.0.0.1:80 127.0.0.1:8443 &
pids+=("$!")
wait_for nsx bash -c 'ss -ltn | grep -q "127.0.0.1:443 "'

# record NAME PORT CMD...: capture CMD's connection to PORT into
# OUTDIR/tcp-NAME.pcap.
record() {
	local name="$1" port="$2"
	shift 2
	local log="$tmp/$name.tcpdump.log"
	ip netns exec "$ns" tcpdump -i lo -U -s 0 -w "$tmp/$name.pcap" "tcp dst port $port or tcp src port $port" 2>"$log" &
	local tp="$!"
	pids+=("$tp")
	wait_for grep -q "listening on" "$log"
	nsx timeout 30 "$@" >"$tmp/$name.out" 2>&1 || true
	sleep 0.5 # let the last ACKs reach tcpdump (-U writes each packet as it comes)
	kill -INT "$tp"
	wait "$tp" || true
	cp "$tmp/$name.pcap" "$outdir/tcp-$name.pcap"
	echo "recorded $outdir/tcp-$name.pcap"
}

mkdir -p "$outdir"
record curl-tls 443 curl -sk --max-time 3 \
	--resolve curl.example.test:443:127.0.0.1 https://curl.example.test/
record curl-http 80 curl -s --max-time 3 \
	--resolve plain.example.test:80:127.0.0.1 http://plain.example.test/
record openssl-tls 443 bash -c \
	'sleep 3 | openssl s_client -connect 127.0.0.1:443 -servername openssl.example.test'
record go-tls 443 "$tmp/recordhello" client go.example.test 127.0.0.1:443
if command -v chromium >/dev/null; then
	# Chromium opens connections of its own (time fetches, updaters) even
	# with background networking off, and the resolver rule sends them here
	# too: its page is on port 8443, the only one captured for it.
	record chromium-tls 8443 timeout 25 chromium --headless --no-sandbox \
		--disable-gpu --no-first-run --disable-background-networking \
		--disable-component-update --disable-sync --user-data-dir="$tmp/chromium" \
		--host-resolver-rules="MAP * 127.0.0.1" --dump-dom https://chromium.example.test:8443/
else
	echo "record-clients: chromium not installed, not recorded" >&2
fi
