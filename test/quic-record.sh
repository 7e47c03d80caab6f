#!/usr/bin/env bash
# quic-record.sh — record real QUIC clients' Initial datagrams into
# pkg/classify/testdata/quic/*.pcap, for the QUIC Initial reader's tests.
#
# Usage: test/quic-record.sh [OUTDIR]
#        As root; OUTDIR defaults to pkg/classify/testdata/quic. Run once by
#        a person; `make test` only reads the recordings.
#
# Inputs (environment, optional):
#   CHROMIUM  chromium binary to record too (default: `chromium` if on PATH;
#             set CHROMIUM=none to skip it)
#
# Topology: one network namespace of its own with only loopback up; nothing
# leaves it.
#
#   +-------------------- netns egq-$$ -----------------------+
#   |  quicrecord -mode server  127.0.0.1:443 (HTTP/3, quic-go) |
#   |  clients -> 127.0.0.1:443 (quic-go; Chromium, mapped)     |
#   |  tcpdump -i lo 'udp and dst port 443'  -> one pcap each   |
#   +---------------------------------------------------------+
#
# Recordings (client-to-server datagrams only, all to name.example.test):
#   quic-go-x25519.pcap    quic-go, X25519 only: the hello fits one datagram
#   quic-go-default.pcap   quic-go with Go's default key shares
#                          (X25519MLKEM768): the hello spans two datagrams
#   quic-go-v2.pcap        quic-go starting in QUIC version 2
#   quic-chromium.pcap     Debian's chromium, headless, forced onto QUIC
set -euo pipefail

cd "$(dirname "$0")/.."
out="${1:-pkg/classify/testdata/quic}"
name="name.example.test"
ns="egq-$$"
tmp="$(mktemp -d)"
server_pid=""
dump_pid=""

cleanup() {
	set +e
	[[ -n "$dump_pid" ]] && kill "$dump_pid" 2>/dev/null && wait "$dump_pid" 2>/dev/null
	[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	ip netns del "$ns" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

if [[ "$(id -u)" != 0 ]]; then
	echo "quic-record.sh: needs root (network namespaces, tcpdump)" >&2
	exit 1
fi
for cmd in ip tcpdump go; do
	command -v "$cmd" >/dev/null || { echo "quic-record.sh: needs $cmd" >&2; exit 1; }
done
chromium="${CHROMIUM:-$(command -v chromium || true)}"
[[ "$chromium" == none ]] && chromium=""

mkdir -p "$out"
go build -o "$tmp/quicrecord" ./test/quicrecord
ip netns add "$ns"
ip -n "$ns" link set lo up

# wait_for CMD... polls (at most 10 s) until CMD succeeds.
wait_for() {
	local _
	for _ in $(seq 100); do
		"$@" && return 0
		sleep 0.1
	done
	echo "quic-record.sh: timed out waiting for: $*" >&2
	return 1
}

ip netns exec "$ns" "$tmp/quicrecord" -mode server -addr 127.0.0.1:443 \
	-name "$name" -spki "$tmp/spki" -for 5m &
server_pid=$!
wait_for test -s "$tmp/spki"

# record FILE CMD... captures the client datagrams CMD sends into FILE.
record() {
	local file="$1"
	shift
	ip netns exec "$ns" tcpdump -i lo --immediate-mode -U -n -w "$tmp/cap.pcap" 'udp and dst port 443' \
		2>"$tmp/tcpdump.log" &
	dump_pid=$!
	wait_for grep -q "listening on" "$tmp/tcpdump.log"
	if ! ip netns exec "$ns" "$@"; then
		echo "quic-record.sh: client failed: $*" >&2
		return 1
	fi
	# Immediate mode hands tcpdump each datagram at once; give it a moment
	# to write the last ones, then stop it (SIGTERM flushes the file).
	wait_for test "$(stat -c %s "$tmp/cap.pcap")" -gt 24
	sleep 0.5
	kill "$dump_pid"
	wait "$dump_pid" || true
	dump_pid=""
	cp "$tmp/cap.pcap" "$out/$file"
	echo "recorded $out/$file"
}

client=("$tmp/quicrecord" -mode client -addr 127.0.0.1:443 -name "$name")
record quic-go-x25519.pcap "${client[@]}" -curves x25519
record quic-go-default.pcap "${client[@]}"
record quic-go-v2.pcap "${client[@]}" -version 2

if [[ -n "$chromium" ]]; then
	profile="$tmp/chromium-profile"
	mkdir -p "$profile"
	# No sandbox: it runs as root in a throwaway namespace. Only the lab
	# name is mapped, to loopback; every background service is off.
	record quic-chromium.pcap timeout 30 "$chromium" --headless --no-sandbox \
		--disable-gpu --no-first-run --disable-background-networking \
		--disable-component-update --disable-sync --disable-default-apps \
		--user-data-dir="$profile" --enable-quic \
		--origin-to-force-quic-on="$name:443" \
		--host-resolver-rules="MAP $name 127.0.0.1" \
		--ignore-certificate-errors-spki-list="$(cat "$tmp/spki")" \
		--dump-dom "https://$name/"
else
	echo "quic-record.sh: no chromium; skipped its recording" >&2
fi
