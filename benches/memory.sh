#!/usr/bin/env bash
# Memory bound of the submission server (README "Performance"): starts the release binary
# on free 127.0.0.1 ports, holds 2,000 idle sessions open, then runs 50
# concurrent 25 MiB submissions (the 2,000 still open), and reports the
# server's RSS (VmRSS) at each step and its peak (VmHWM). Fails when the peak
# exceeds BOUND_MIB (default 128).
#
#   benches/memory.sh            # builds `cargo build --release` first
#   IDLE=2000 PARALLEL=50 SIZE_MIB=25 BOUND_MIB=128 benches/memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${IDLE:-2000}
PARALLEL=${PARALLEL:-50}
SIZE_MIB=${SIZE_MIB:-25}
BOUND_MIB=${BOUND_MIB:-128}
ulimit -n "$(( IDLE * 2 + 1024 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --bin danerelay >&2
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
smtp=$(free_port); http=$(free_port)
cat > "$work/danerelay.toml" <<TOML
hostname = "bench.test"
[[listener]]
address = "127.0.0.1:$smtp"
tls = "none"
[auth]
trusted_networks = ["127.0.0.1/32"]
[limits]
max_message_size = "$(( SIZE_MIB + 1 ))MiB"
max_connections = $(( IDLE + PARALLEL + 100 ))
[queue]
path = "$work/queue"
[dns]
nameservers = ["127.0.0.1:9"]
dnssec = "off"
dnssec_probe = ""
[http]
address = "127.0.0.1:$http"
TOML
RUST_LOG=warn target/release/danerelay serve --config "$work/danerelay.toml" 2>"$work/server.log" &
pid=$!
python3 benches/memory_load.py "$pid" "$smtp" "$IDLE" "$PARALLEL" "$SIZE_MIB" "$BOUND_MIB"
