#!/usr/bin/env bash
# Start-up time and memory with a big queue (issue #23 goals 1 and 2): prefills a queue with
# COUNT held messages of SIZE bytes (benchtool prefill, through the queue crate with the
# relay's own options), then starts the release binary on it ROUNDS times and reports, per
# start: seconds from launch to /readyz 200, seconds until the log says the recovery scan
# finished, and the server's RSS, PSS and peak RSS (VmHWM) after SETTLE seconds. JSON lines.
#
#   cargo build --release --bin danerelay --bench benchtool
#   COUNT=1000000 SIZE=2048 benches/queue_start.sh
#   QUEUE_DIR=/var/tmp/q1m benches/queue_start.sh   # reuse (or keep) a prefilled queue
#   CACHE_SIZE=64MiB                                # queue.cache_size ("" = key not set)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-1000000}
SIZE=${SIZE:-2048}
ROUNDS=${ROUNDS:-3}
SETTLE=${SETTLE:-15}
CACHE_SIZE=${CACHE_SIZE-64MiB}
BIN=${BIN:-target/release/danerelay}
BENCHTOOL=${BENCHTOOL:-$(ls -t target/release/deps/benchtool-* | grep -v '\.d$' | head -1)}
work=$(mktemp -d)
QUEUE_DIR=${QUEUE_DIR:-$work/queue}
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
smtp=$(free_port); http=$(free_port)
cache_line=""
[ -n "$CACHE_SIZE" ] && cache_line="cache_size = \"$CACHE_SIZE\""
cat > "$work/danerelay.toml" <<TOML
hostname = "bench.test"
[[listener]]
address = "127.0.0.1:$smtp"
tls = "none"
[auth]
trusted_networks = ["127.0.0.1/32"]
[queue]
path = "$QUEUE_DIR"
$cache_line
[dns]
nameservers = ["127.0.0.1:9"]
dnssec = "off"
dnssec_probe = ""
[http]
address = "127.0.0.1:$http"
TOML
if [ ! -d "$QUEUE_DIR/sled" ]; then
    "$BENCHTOOL" prefill --config "$work/danerelay.toml" --count "$COUNT" --size "$SIZE"
fi
status() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }
for round in $(seq "$ROUNDS"); do
    sync
    start=$(date +%s.%N)
    RUST_LOG=info "$BIN" serve --config "$work/danerelay.toml" >"$work/server.log" 2>&1 &
    pid=$!
    until curl -fs "http://127.0.0.1:$http/readyz" >/dev/null 2>&1; do
        kill -0 "$pid" || { cat "$work/server.log" >&2; exit 1; }
        sleep 0.02
    done
    ready=$(echo "$(date +%s.%N) - $start" | bc)
    scanned=""
    for _ in $(seq $(( SETTLE * 10 ))); do
        if [ -z "$scanned" ] && grep -q "recovery scan finished" "$work/server.log"; then
            scanned=$(echo "$(date +%s.%N) - $start" | bc)
        fi
        sleep 0.1
    done
    pss=$(awk '$1=="Pss:" {print $2}' "/proc/$pid/smaps_rollup")
    echo "{\"round\":$round,\"ready_s\":$ready,\"scan_done_s\":${scanned:-null},\"rss_kib\":$(status "$pid" VmRSS),\"pss_kib\":$pss,\"hwm_kib\":$(status "$pid" VmHWM),\"cache_size\":\"$CACHE_SIZE\"}"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done
