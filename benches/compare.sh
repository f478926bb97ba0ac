#!/usr/bin/env bash
# danerelay vs Postfix on this machine, in one run. See README.md "Performance".
#
#   sudo benches/compare.sh            # ~20 min with the defaults below on a loaded 2-core
#                                      # VM (workload 5: 7-13)
#   sudo WORKLOADS=5 benches/compare.sh
#   sudo QUICK=1 benches/compare.sh    # development: 1 round, 1,000 messages, 20,000
#                                      # prefilled; ~5 min; writes benches/results/quick.json
#
# The run stops with an error (exit status 1, no results file written) as soon as a trial
# is broken: a load generator that failed or timed out, mail missing at a sink, a DANE
# delivery that was not verified, prefilled mail lost. Its trials so far are kept in
# /tmp/danerelay-bench-failed-*.jsonl for diagnosis. Numbers come only from complete runs.
#
# Knobs (environment):
#   WORKLOADS="1 2 3 4 5 6 7 8"  which workloads to run (2 and 4 share one trial; 1 runs
#                     paused; 3 also runs "Postfix tuned": smtp_tls_connection_reuse = yes
#                     and connection caching always on for dane.bench)
#   QUICK=1           defaults for development (ROUNDS=1 MESSAGES=1000 SCALE_PREFILL=20000
#                     QUEUE_BENCH_PREFILL=0 OUT=benches/results/quick.json); any knob set
#                     explicitly still wins
#   ROUNDS=3          rounds; each runs every workload on danerelay, then Postfix
#   MESSAGES=5000     messages per trial (every workload; in 8, to the healthy destination)
#   SESSIONS=50       concurrent client sessions (smtp-source -s, benchtool load --sessions)
#   SIZE=10240        message size in bytes (smtp-source -l)
#   TRIAL_TIMEOUT=180 seconds a trial may take before it is abandoned (and reported)
#   MAX_SECONDS=3000  hard limit for the whole script (removing a 1 M prefill after it
#                     takes up to a minute more)
#   SCALE_PREFILL=1000000  workload 5: messages already queued (held) in each MTA
#                     while the ingest trial runs (0 = skip workload 5)
#   SCALE_SIZE=2048   workload 5: size of each prefilled message (disk: ~7.5 GB at 1 M)
#   SCALE_MAX_GB=15   workload 5 refuses to prefill more than this (estimated)
#   QUEUE_BENCH_PREFILL=0  workload 5 extra row (off by default: ~5 min with its build):
#                     e.g. 100000 runs the queue crate's own bench with
#                     this many queued (0 = skip)
#   MANY_DOMAINS=1000 workload 6: recipient domains d0..dN-1.many.bench, all MX mx-many.bench
#   BASELINE_BIN=     workload 6: another danerelay binary (e.g. a build of main) run in the
#                     same rounds as "danerelay before"
#   DEST_DOMAINS=1000 workload 7 (many destinations): domains d0..dN-1.dest.bench, domain i
#                     with MX mx<i mod DEST_MX>.dest.bench
#   DEST_MX=10        workload 7: MX hosts (sinks on 127.0.77.20 and up, one process)
#   SLOW_DELAY_MS=5000  workload 8: the slow destination's delay before every reply
#   SLOW_EVERY=50     workload 8: one message to the slow destination after every 50 to the
#                     healthy one (MESSAGES / SLOW_EVERY slow messages)
#   OUT=benches/results/latest.json
#   SKIP_INSTALL=1    do not apt-get install missing tools
#
# Everything listens on 127.0.77.0/24 only:
#   .2:25 danerelay (tls=none, trusted 127/8), .2:9587 its HTTP
#   .3:25 Postfix (private instance: own config and queue dirs under a temp dir)
#   .10:25 smtp-sink (MX of plain.bench)   .11:25 benchtool sink with STARTTLS (MX of dane.bench)
#   .12:25 benchtool sink, plain, started per trial (MX of every d<i>.many.bench, workload 6)
#   .13:25 benchtool sink --delay-ms 5000, per trial (MX of slow.bench, workload 8)
#   .20-.29:25 one benchtool sink process, per trial (mx0..mx9.dest.bench, workload 7)
#   .53:53 unbound (validating; trust anchor = the bench. key)   .54:53 knotd (signed zone bench.)
# Postfix's smtp client uses the libc resolver, so Postfix runs in a private mount namespace
# (unshare -m) where /etc/resolv.conf is bind-mounted to "nameserver 127.0.77.53 / options
# trust-ad" (glibc passes the AD bit on only with trust-ad).
#
# Workload 5 (scale): each MTA gets SCALE_PREFILL messages on hold before the run; then,
# alternating with a fresh empty-queue instance, the smtp-source ingest trial (deliveries on,
# to the sink) is repeated
# against the prefilled one (same instance restarted each round: its start-up time is
# reported too). danerelay's prefill goes through the queue crate with the relay's own
# options (benchtool prefill: durable commit, then hold). Postfix's prefill is one real queue
# file (a message received with smtpd's HOLD action) cloned into hold/ under valid queue ids
# (benchtool pf-clone), since 1 M messages through smtpd would take ~40 minutes. Held mail
# is never scanned by either scheduler: the figure is what a large parked queue costs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${QUICK:-}" ]; then
    : "${ROUNDS:=1}" "${MESSAGES:=1000}" "${SCALE_PREFILL:=20000}" "${QUEUE_BENCH_PREFILL:=0}"
    : "${OUT:=$ROOT/benches/results/quick.json}"
fi
WORKLOADS=${WORKLOADS:-1 2 3 4 5 6 7 8}
ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-5000}
SESSIONS=${SESSIONS:-50}
SIZE=${SIZE:-10240}
TRIAL_TIMEOUT=${TRIAL_TIMEOUT:-180}
MAX_SECONDS=${MAX_SECONDS:-3000}
SCALE_PREFILL=${SCALE_PREFILL:-1000000}
SCALE_SIZE=${SCALE_SIZE:-2048}
SCALE_MAX_GB=${SCALE_MAX_GB:-15}
QUEUE_BENCH_PREFILL=${QUEUE_BENCH_PREFILL:-0}
MANY_DOMAINS=${MANY_DOMAINS:-1000}
BASELINE_BIN=${BASELINE_BIN:-}
DEST_DOMAINS=${DEST_DOMAINS:-1000}
DEST_MX=${DEST_MX:-10}
SLOW_DELAY_MS=${SLOW_DELAY_MS:-5000}
SLOW_EVERY=${SLOW_EVERY:-50}
OUT=${OUT:-$ROOT/benches/results/latest.json}

NET=127.0.77
RELAY=$NET.2 POSTFIX=$NET.3 SINK_PLAIN=$NET.10 SINK_TLS=$NET.11 SINK_MANY=$NET.12
SINK_SLOW=$NET.13 SINK_DEST0=20
UNBOUND=$NET.53 KNOT=$NET.54

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
runs() { [[ " $WORKLOADS " == *" $1 "* ]]; } # workload number -> selected?
[ "$DEST_MX" -ge 1 ] && [ "$DEST_MX" -le 200 ] || die "DEST_MX must be 1..200"
[ "$SLOW_EVERY" -ge 1 ] && [ $(( MESSAGES / SLOW_EVERY )) -ge 1 ] ||
    die "SLOW_EVERY must be 1..MESSAGES"

# Bounded: the whole run is re-executed under timeout(1); its TERM runs the cleanup trap.
# (bash runs the trap only once a foreground command returns: long commands below run
# under `timeout "$(remaining)"`.)
if [ -z "${_BENCH_TIMED:-}" ]; then
    export _BENCH_TIMED=1 _BENCH_DEADLINE=$(( $(date +%s) + MAX_SECONDS ))
    exec timeout --foreground -s TERM "$MAX_SECONDS" "$0" "$@"
fi
remaining() { local r=$(( _BENCH_DEADLINE - $(date +%s) )); echo $(( r > 1 ? r : 1 )); }
[ "$(id -u)" = 0 ] || die "run as root (Postfix, unshare -m and port 25 need it)"

# ------------------------------------------------------------------ install
need=()
for t in smtp-source:postfix smtp-sink:postfix postfix:postfix unbound:unbound knotd:knot \
         ldns-keygen:ldnsutils ldns-signzone:ldnsutils unshare:util-linux python3:python3; do
    command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    [ -z "${SKIP_INSTALL:-}" ] || die "missing: ${need[*]}"
    log "installing ${need[*]}"
    # "No configuration": the package must not start a system Postfix on *:25.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2
fi

# ------------------------------------------------------------------ addresses free?
taken=$(ss -Hltnu 2>/dev/null | awk '{print $5}' |
    grep -E "^(${NET//./\\.}\.[0-9]+|0\.0\.0\.0|\*|\[::\]):(25|53|9587)$|^${NET//./\\.}\." || true)
[ -z "$taken" ] || die "refusing to run: already bound: $(echo "$taken" | tr '\n' ' ')"

# ------------------------------------------------------------------ cleanup
T=$(mktemp -d /tmp/danerelay-bench.XXXXXX)
chmod 755 "$T"
PIDS=() SAMPLER=""
# Removing many small files that reached the disk costs ~0.7 ms each one after another on
# this VM (ext4, discard) but overlaps well: 1 M queue files take ~1 min with 8 in parallel.
remove_tree() { # dir
    [ -d "$1" ] || return 0
    find "$1" -type f -print0 | xargs -0 -r -P8 -n2000 rm -f
    rm -rf "$1"
}
cleanup() {
    set +e
    trap - EXIT INT TERM
    for d in "$T/pf" "$T/pf-empty" "$T/pf-full"; do
        [ -f "$d/etc/main.cf" ] && postfix -c "$d/etc" stop >/dev/null 2>&1
    done
    [ -f "$T/dr.pid" ] && kill "$(cat "$T/dr.pid")" 2>/dev/null
    [ -n "$SAMPLER" ] && kill -TERM "$SAMPLER" 2>/dev/null
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    # Postfix processes exit asynchronously after "stop"; give them a moment before rm.
    for d in "$T/pf" "$T/pf-empty" "$T/pf-full"; do
        for _ in $(seq 50); do
            kill -0 "$(tr -d ' ' 2>/dev/null <"$d/queue/pid/master.pid")" 2>/dev/null || break
            sleep 0.1
        done
    done
    if [ -d "$T/pf-full" ] || [ -d "$T/dr-full" ]; then
        log "removing the workload-5 prefill"
        remove_tree "$T/pf-full"
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ------------------------------------------------------------------ disk (workload 5)
if runs 5 && [ "$SCALE_PREFILL" -gt 0 ]; then
    # Estimate: danerelay ~1.2 KB per message beyond the body (sled records), Postfix one file
    # per message, ~950 B of records and headers beyond the body, in 4 KiB blocks.
    need_mb=$(( SCALE_PREFILL * (SCALE_SIZE + 1200 + (SCALE_SIZE + 950 + 4095) / 4096 * 4096) / 1048576 ))
    avail_mb=$(df -Pm "$T" | awk 'NR == 2 { print $4 }')
    [ "$need_mb" -le $(( SCALE_MAX_GB * 1024 )) ] ||
        die "workload 5 would need ~$need_mb MB of disk (SCALE_MAX_GB=$SCALE_MAX_GB)"
    [ $(( need_mb + 5120 )) -le "$avail_mb" ] ||
        die "workload 5 needs ~$need_mb MB of disk and 5 GB to spare; $avail_mb MB free"
    log "workload 5: the prefill needs ~$need_mb MB of disk ($avail_mb MB free)"
fi

# ------------------------------------------------------------------ build
log "building (release: cargo bench --no-run builds the danerelay binary too)"
BENCHTOOL=$(cd "$ROOT" && cargo bench --bench benchtool --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("executable") and m["target"]["name"]=="benchtool": print(m["executable"])')
DANERELAY=$ROOT/target/release/danerelay
if ! [ -x "$BENCHTOOL" ] || ! [ -x "$DANERELAY" ]; then die "build failed"; fi

# ------------------------------------------------------------------ sinks
mkdir -p "$T/sink-plain" "$T/sink-tls"
# smtp-sink -c prints running counters ("mesg=N") separated by CR.
smtp-sink -u nobody -c "$SINK_PLAIN:25" 256 >"$T/sink-plain/out" 2>&1 &
PIDS+=($!)
"$BENCHTOOL" sink "$SINK_TLS:25" --dir "$T/sink-tls" --tls --name mx-dane.bench \
    >"$T/sink-tls/log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$T/sink-tls/tlsa.hex" ] && break; sleep 0.1; done
TLSA=$(cat "$T/sink-tls/tlsa.hex") || die "TLS sink did not start"

sink_count() { # plain|tls -> messages received so far
    if [ "$1" = plain ]; then
        tail -c 200 "$T/sink-plain/out" | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -1 |
            cut -d= -f2 | grep . || echo 0
    else
        cut -d' ' -f1 "$T/sink-tls/count" 2>/dev/null || echo 0
    fi
}
sink_tls_count() { cut -d' ' -f2 "$T/sink-tls/count" 2>/dev/null || echo 0; }
sink_tls_conns() { cut -d' ' -f3 "$T/sink-tls/count" 2>/dev/null || echo 0; }

# ------------------------------------------------------------------ DNS
log "signing zone bench. and starting knotd + unbound"
MANY="" DEST=""
if runs 6; then MANY=1; fi
if runs 7; then DEST=1; fi
mkdir -p "$T/dns"
(
    cd "$T/dns"
    key=$(ldns-keygen -a ECDSAP256SHA256 -k bench.)
    cat >bench.zone <<EOF
\$ORIGIN bench.
\$TTL 3600
@ SOA ns.bench. hostmaster.bench. 1 3600 600 86400 300
@ NS ns.bench.
ns A $KNOT
plain MX 10 mx-plain
mx-plain A $SINK_PLAIN
dane MX 10 mx-dane
mx-dane A $SINK_TLS
_25._tcp.mx-dane TLSA 3 1 1 $TLSA
mx-many A $SINK_MANY
slow MX 10 mx-slow
mx-slow A $SINK_SLOW
EOF
    # Workload 6: many customer domains hosted on one MX (signed, no TLSA: opportunistic).
    if [ -n "$MANY" ]; then
        for i in $(seq 0 $(( MANY_DOMAINS - 1 ))); do echo "d$i.many MX 10 mx-many"; done >>bench.zone
    fi
    # Workload 7: many domains on DEST_MX shared MX hosts (signed, no TLSA).
    if [ -n "$DEST" ]; then
        for k in $(seq 0 $(( DEST_MX - 1 ))); do echo "mx$k.dest A $NET.$(( SINK_DEST0 + k ))"; done
        for i in $(seq 0 $(( DEST_DOMAINS - 1 ))); do echo "d$i.dest MX 10 mx$(( i % DEST_MX )).dest"; done
    fi >>bench.zone
    ldns-signzone -f bench.zone.signed bench.zone "$key"
    mv bench.zone.signed bench.zone
    cp "$key.key" anchor.key
)
cat >"$T/dns/knot.conf" <<EOF
server:
    rundir: "$T/dns"
    listen: $KNOT@53
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: "$T/dns/db"
template:
  - id: default
    storage: "$T/dns"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: bench.
    file: bench.zone
EOF
cat >"$T/dns/unbound.conf" <<EOF
server:
    interface: $UNBOUND@53
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    do-ip6: no
    username: ""
    chroot: ""
    directory: "$T/dns"
    pidfile: ""
    logfile: ""
    use-syslog: no
    verbosity: 0
    num-threads: 1
    so-reuseport: no
    trust-anchor-file: "$T/dns/anchor.key"
    module-config: "validator iterator"
    qname-minimisation: no
    harden-referral-path: no
    target-fetch-policy: "0 0 0 0 0"
    domain-insecure: "test."
remote-control:
    control-enable: no
stub-zone:
    name: "bench."
    stub-addr: $KNOT@53
EOF
knotd -c "$T/dns/knot.conf" >"$T/dns/knot.log" 2>&1 &
PIDS+=($!)
unbound -d -c "$T/dns/unbound.conf" >"$T/dns/unbound.log" 2>&1 &
PIDS+=($!)
ok=
for _ in $(seq 100); do
    if python3 - "$UNBOUND" <<'EOF' 2>/dev/null; then ok=1; break; fi
import socket, struct, sys
q = struct.pack(">HHHHHH", 1, 0x0120, 1, 0, 0, 1) + b"\x04dane\x05bench\x00" + struct.pack(">HH", 15, 1)
q += b"\x00" + struct.pack(">HHIH", 41, 1232, 0x8000, 0)   # EDNS, DO
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)
s.sendto(q, (sys.argv[1], 53)); r = s.recv(4096)
flags, an = struct.unpack(">H", r[2:4])[0], struct.unpack(">H", r[6:8])[0]
sys.exit(0 if flags & 0x0020 and flags & 0xF == 0 and an > 0 else 1)   # AD, NOERROR, answer
EOF
    sleep 0.2
done
[ -n "$ok" ] || die "unbound does not answer dane.bench MX with AD: $(cat "$T/dns/"*.log)"
printf 'nameserver %s\noptions trust-ad\n' "$UNBOUND" >"$T/resolv.conf"

# ------------------------------------------------------------------ the MTAs
# The instance a trial uses: DR/PF are its directories (fresh, or the workload-5 prefill).
DR=$T/dr PF=$T/pf STARTUP_S=0 PAUSED=false

# danerelay: same durability as always (fsync before 250); DANE; our unbound.
dr_config() { # dir: writes dir/danerelay.toml with the queue in dir/queue
    mkdir -p "$1"
    cat >"$1/danerelay.toml" <<EOF
hostname = "danerelay.bench.test"
shutdown_grace = "3s"
[[listener]]
address = "$RELAY:25"
tls = "none"
[auth]
trusted_networks = ["127.0.0.0/8"]
sender_policy = "any"
[queue]
path = "$1/queue"
[dns]
nameservers = ["$UNBOUND:53"]
dnssec = "trust-ad"
dnssec_probe = "bench."
[delivery]
tls = "dane"
paused = $PAUSED
[http]
address = "$RELAY:9587"
EOF
}
# Starts danerelay on $DR: a fresh queue, or (with "keep") the queue already there.
# STARTUP_S = launch to /readyz (queue opened and recovered, listeners bound).
dr_start() { # [keep]
    if [ -z "${1:-}" ]; then
        rm -rf "$DR"
        dr_config "$DR"
    fi
    local t0 deadline; t0=$(now) deadline=$(( $(date +%s) + TRIAL_TIMEOUT ))
    "${DR_BIN:-$DANERELAY}" serve --config "$DR/danerelay.toml" >"$DR/log" 2>&1 &
    DR_PID=$!
    echo "$DR_PID" >"$T/dr.pid"
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if curl -fs "http://$RELAY:9587/readyz" >/dev/null 2>&1; then
            STARTUP_S=$(since "$t0")
            return 0
        fi
        kill -0 "$DR_PID" 2>/dev/null || break
        sleep 0.1
    done
    die "danerelay did not become ready: $(tail -5 "$DR/log")"
}
dr_stop() {
    kill -TERM "$DR_PID" 2>/dev/null || true
    wait "$DR_PID" 2>/dev/null || true
}
dr_pids() { echo "$DR_PID"; }

# Postfix: a private instance; queue files are fsynced by Postfix itself (default).
# Layout as in a package install: configuration ($PF/etc) outside the queue directory
# ($PF/queue). (With the queue inside config_directory, postfix-script's start-up check
# runs one logging process per queue file, which takes minutes with a large queue.)
# With "keep" the instance in $PF (configuration and queue) is started as it is.
# STARTUP_S = "postfix start" (postsuper's queue check included) until port 25 accepts.
pf_start() { # [keep]
    if [ -z "${1:-}" ]; then
        rm -rf "$PF"
        pf_config
    else
        : >"$PF/maillog"
    fi
    local t0; t0=$(now)
    # The private mount namespace gives Postfix (and only it) our resolv.conf.
    timeout "$(remaining)" unshare -m --propagation private sh -c \
        "mount --bind '$T/resolv.conf' /etc/resolv.conf && postfix -c '$PF/etc' start" \
        >"$PF/start.log" 2>&1 || die "postfix start: $(cat "$PF/start.log")"
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/$POSTFIX/25") 2>/dev/null; then
            STARTUP_S=$(since "$t0")
            return 0
        fi
        sleep 0.1
    done
    die "postfix does not listen: $(cat "$PF/start.log" "$PF/maillog" 2>/dev/null | tail)"
}
pf_config() {
    mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
    chown postfix "$PF/data"
    sed -E -e 's/^([a-z]+[[:space:]]+(inet|unix|fifo|unix-dgram|pass)[[:space:]]+[^[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+)[-y]/\1n/' \
        -e "s/^smtp( +inet)/$POSTFIX:25\1/" /usr/share/postfix/master.cf.dist >"$PF/etc/master.cf"
    grep -q '^postlog' "$PF/etc/master.cf" ||
        echo 'postlog   unix-dgram n  -       n       -       1       postlogd' >>"$PF/etc/master.cf"
    cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
# Postfix accepts only exact interface addresses here (lo has 127.0.0.1/8); the
# listener's address is set in master.cf instead.
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
local_recipient_maps =
biff = no
maillog_file_prefixes = $T
maillog_file = $PF/maillog
smtp_dns_support_level = dnssec
smtp_tls_security_level = dane
smtp_tls_loglevel = 1
smtp_tls_session_cache_database = btree:\${data_directory}/smtp_scache
EOF
    # Workload 1: deliveries paused. Every message goes straight to the hold queue (smtpd's
    # HOLD action; same fsyncs as incoming/), which the queue manager never schedules.
    # (Without qmgr in master.cf instead, each cleanup stalls on its trigger: ~50 msg/s.)
    if [ "$PAUSED" = true ]; then
        echo 'smtpd_data_restrictions = check_client_access static:HOLD' >>"$PF/etc/main.cf"
    fi
    # "Postfix tuned" (workload 3): Postfix at its best for DANE. TLS connections are kept
    # and reused through tlsproxy(8) (Postfix >= 3.4; without it a cached connection is
    # never TLS), and connection caching is always on for dane.bench rather than only once
    # a backlog builds up (smtp_connection_cache_on_demand, on by default, stays on).
    if [ "${PF_TUNED:-}" = 1 ]; then
        echo 'tlsproxy  unix  -       -       n       -       0       tlsproxy' >>"$PF/etc/master.cf"
        cat >>"$PF/etc/main.cf" <<EOF
smtp_tls_connection_reuse = yes
smtp_connection_cache_on_demand = yes
smtp_connection_cache_destinations = dane.bench
EOF
    fi
}
pf_stop() {
    postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
    for _ in $(seq 50); do
        [ -f "$PF/queue/pid/master.pid" ] &&
            kill -0 "$(tr -d ' ' <"$PF/queue/pid/master.pid")" 2>/dev/null || return 0
        sleep 0.1
    done
    postfix -c "$PF/etc" abort >/dev/null 2>&1 || true
}
pf_pids() {
    local master
    master=$(tr -d ' ' 2>/dev/null <"$PF/queue/pid/master.pid") || return 0
    echo "$master"
    pgrep -P "$master" || true
}

# Samples RSS and PSS (kB) of an MTA's processes every 200 ms; prints the peaks on TERM.
sample_memory() { # mta
    local peak_rss=0 peak_pss=0 rss pss
    trap 'echo "$peak_rss $peak_pss"; exit 0' TERM
    while :; do
        read -r rss pss < <(for p in $("$1"_pids); do
            cat "/proc/$p/smaps_rollup" 2>/dev/null
        done | awk '/^Rss:/{r+=$2} /^Pss:/{p+=$2} END{print r+0, p+0}')
        [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
        [ "$pss" -gt "$peak_pss" ] && peak_pss=$pss
        sleep 0.2 & wait $!
    done
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

# One trial: start the MTA, submit MESSAGES, wait for them at the sink. Prints a JSON
# object. Workloads 1-4 start a fresh instance; workload 5 restarts its empty or prefilled
# instance ($T/dr-empty, $T/pf-full, ...), so both states pay the same start-up.
# Workload 1 (ingest, latency) runs with deliveries paused: nothing is waited for.
# mta: dr, pf, or pft ("Postfix tuned": pf with PF_TUNED=1, workload 3 only).
trial() { # mta workload(ingest|latency|plain|dane|scale) [state(empty|full) round, workload 5]
    local mta=$1 w=$2 state=${3:-} round=${4:-0} kind=$1
    local ip sink base t0 t1 t2 n last_n sampler="" mem="0 0" extra="{}" rc=0 paused=""
    case $w in ingest | ingest_kept | latency) paused=paused PAUSED=true ;; *) PAUSED=false ;; esac
    [ "$mta" = pft ] && kind=pf PF_TUNED=1
    [ "$mta" = dr ] && ip=$RELAY || ip=$POSTFIX
    [ "$w" = dane ] && sink=tls || sink=plain
    if [ -n "$state" ]; then
        DR=$T/dr-$state PF=$T/pf-$state
        "${kind}_start" keep
    else
        DR=$T/dr PF=$T/pf
        "${kind}_start"
    fi
    base=$(sink_count "$sink")
    local tls_base conns_base; tls_base=$(sink_tls_count) conns_base=$(sink_tls_conns)
    if [ "$w" = plain ] || [ "$w" = scale ]; then
        sample_memory "$kind" >"$T/mem" &
        sampler=$! SAMPLER=$!
    fi
    t0=$(now)
    if [ "$w" = latency ]; then
        extra=$(timeout "$TRIAL_TIMEOUT" "$BENCHTOOL" load "$ip:25" --sessions "$SESSIONS" \
            --count "$MESSAGES" --size "$SIZE" --per-session 1 --rcpt sink@plain.bench) || rc=$?
    else
        # ingest_kept: smtp-source -d, each of the SESSIONS sessions stays connected and sends
        # message after message; the others open one connection per message.
        # shellcheck disable=SC2046
        timeout "$TRIAL_TIMEOUT" smtp-source $([ "$w" = ingest_kept ] && echo -d) \
            -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" \
            -f bench@load.test -t "sink@$([ "$w" = dane ] && echo dane || echo plain).bench" \
            "$ip:25" >&2 || rc=$?
    fi
    t1=$(now)
    # Wait for the last delivery (bounded); t2 = when the count last moved.
    last_n=-1 t2=$t1
    local deadline=$(( $(date +%s) + TRIAL_TIMEOUT ))
    while [ -z "$paused" ]; do
        n=$(( $(sink_count "$sink") - base ))
        if [ "$n" != "$last_n" ]; then last_n=$n t2=$(now); fi
        [ "$n" -ge "$MESSAGES" ] && break
        [ "$(date +%s)" -lt "$deadline" ] || { log "trial $mta/$w: only $n/$MESSAGES delivered"; break; }
        sleep 0.05
    done
    if [ -n "$sampler" ]; then
        kill -TERM "$sampler"
        wait "$sampler" || true
        SAMPLER="" mem=$(cat "$T/mem")
    fi
    local tls_n=$(( $(sink_tls_count) - tls_base )) tls_conns=0
    [ "$sink" = tls ] && tls_conns=$(( $(sink_tls_conns) - conns_base ))
    local verified=0 sent=0
    if [ "$mta" = dr ]; then
        sent=$(grep -c 'status=sent' "$DR/log" || true)
        verified=$(grep 'status=sent' "$DR/log" | grep -c 'tls=dane-verified' || true)
        dr_stop
    else
        sleep 0.5  # postlogd writes asynchronously
        sent=$(grep -c 'status=sent' "$PF/maillog" || true)
        # Postfix logs TLS per connection, not per message: share of verified connections.
        verified=$(grep -c 'Verified TLS connection established' "$PF/maillog" || true)
        local conns; conns=$(grep -c 'TLS connection established' "$PF/maillog" || true)
        [ "$w" = dane ] && log "postfix: $verified of $conns TLS connections verified"
        pf_stop
    fi
    DR=$T/dr PF=$T/pf PF_TUNED=""
    python3 - "$mta" "$w${state:+_$state}" "$t0" "$t1" "$t2" "$last_n" "$MESSAGES" "$mem" "$sent" \
        "$verified" "$tls_n" "$rc" "$extra" "$STARTUP_S" "$round" "$paused" "$tls_conns" <<'EOF'
import json, sys
mta, w, t0, t1, t2, n, want, mem, sent, ver, tls_n, rc, extra, startup, rnd, paused, tls_c = sys.argv[1:]
t0, t1, t2, n, want = float(t0), float(t1), float(t2), int(n), int(want)
rss, pss = (int(x) for x in mem.split())
r = {"mta": mta, "workload": w, "want": want, "paused": paused != "", "delivered": n,
     "submitted_s": t1 - t0,
     "ingest_rate": want / (t1 - t0), "e2e_rate": n / (t2 - t0) if n >= want else 0.0,
     "logged_sent": int(sent), "logged_verified": int(ver), "sink_tls": int(tls_n),
     "sink_connections": int(tls_c),
     "peak_rss_kb": rss, "peak_pss_kb": pss, "load_rc": int(rc), "startup_s": float(startup)}
r.update({"load": json.loads(extra)} if extra != "{}" else {})
r.update({"round": int(rnd)} if int(rnd) else {})
print(json.dumps(r))
EOF
}

# A broken run reports nothing: the first trial that is not complete stops the script
# (its trials so far are kept in /tmp for diagnosis; OUT is not written).
broken() { # reason
    local keep; keep=/tmp/danerelay-bench-failed-$(date -u +%Y%m%dT%H%M%S).jsonl
    cat "$RESULTS" "$T/trial.json" >"$keep" 2>/dev/null || true
    die "broken run, no results written ($keep has the trials so far): $*"
}
# Checks $T/trial.json (written by trial, trial_many or trial_slow) and appends it to RESULTS.
record_trial() {
    cat "$T/trial.json" >&2
    local why
    why=$(python3 - "$T/trial.json" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))
bad = []
if t.get("load_rc", 0) != 0:
    bad.append(f"the load generator exited with status {t['load_rc']} (124: TRIAL_TIMEOUT)")
if not t.get("paused") and t["delivered"] < t["want"]:
    bad.append(f"only {t['delivered']} of {t['want']} messages reached the sink")
load = t.get("load")
if load is not None:
    want = t["want"] + t.get("alt_want", 0)
    if load.get("failed_sessions") or load.get("accepted", 0) < want:
        bad.append(f"load: {load.get('accepted')} of {want} accepted, "
                   f"{load.get('failed_sessions')} sessions failed")
    if load.get("alt_accepted", 0) < t.get("alt_want", 0):
        bad.append(f"load: {load.get('alt_accepted')} of {t['alt_want']} slow messages accepted")
if t["workload"] == "dane":
    if t["sink_tls"] < t["delivered"]:
        bad.append(f"{t['delivered'] - t['sink_tls']} DANE messages arrived without TLS")
    if t["mta"] == "dr" and t["logged_verified"] < t["want"]:
        bad.append(f"{t['logged_verified']} of {t['want']} deliveries logged tls=dane-verified")
    if t["mta"] != "dr" and t["logged_verified"] < 1:
        bad.append("Postfix logged no verified TLS connection")
if t["workload"] == "slow_mixed" and t.get("slow_max_open", 0) < 1:
    bad.append("no connection to the slow destination while the healthy mail was delivered")
print("; ".join(bad))
EOF
    ) || broken "checking $(cat "$T/trial.json")"
    [ -z "$why" ] || broken "$why"
    cat "$T/trial.json" >>"$RESULTS"
}
run_trial() { # mta workload [state round]
    trial "$@" >"$T/trial.json"
    record_trial
}

mta_name() {
    case $1 in dr) echo danerelay ;; pft) echo "postfix tuned" ;; base) echo "danerelay before" ;;
        *) echo postfix ;; esac
}

# ------------------------------------------------------------------ rounds (workloads 1-4)
RESULTS=$T/trials.jsonl
: >"$RESULTS"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ) LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $LOAD_START"
KINDS=()
if runs 1; then KINDS+=(ingest ingest_kept latency); fi
if runs 2 || runs 4; then KINDS+=(plain); fi
if runs 3; then KINDS+=(dane); fi
if [ ${#KINDS[@]} -gt 0 ]; then
    for round in $(seq "$ROUNDS"); do
        for w in "${KINDS[@]}"; do
            mtas="dr pf"
            [ "$w" = dane ] && mtas="dr pf pft"
            for mta in $mtas; do
                log "round $round: $w on $(mta_name $mta)"
                run_trial "$mta" "$w"
            done
        done
    done
fi

# ------------------------------------------------------------------ workloads 6, 7 and 8
# Starts a benchtool sink on ADDR[,ADDR...] in DIR (fresh, so that its counters are the
# trial's own: messages, TLS messages, connections accepted, most open at once).
start_sink() { # dir addrs [sink options...]
    local dir=$1 addrs=$2
    shift 2
    rm -rf "$dir"
    mkdir -p "$dir"
    "$BENCHTOOL" sink "$addrs" --dir "$dir" "$@" >"$dir/log" 2>&1 &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    for _ in $(seq 100); do grep -q listening "$dir/log" && return 0; sleep 0.1; done
    die "sink on $addrs did not start: $(cat "$dir/log")"
}
stop_sink() {
    kill "$SINK_PID" 2>/dev/null || true
    wait "$SINK_PID" 2>/dev/null || true
}
sink_file_count() { cut -d' ' -f1 "$1/count" 2>/dev/null || echo 0; } # dir -> messages
start_mta() { # dr|base|pf -> sets MTA_IP
    case $1 in
        pf) MTA_IP=$POSTFIX; pf_start ;;
        base) MTA_IP=$RELAY; DR_BIN=$BASELINE_BIN; dr_start ;;
        *) MTA_IP=$RELAY; DR_BIN=$DANERELAY; dr_start ;;
    esac
}
stop_mta() { # dr|base|pf
    if [ "$1" = pf ]; then pf_stop; else dr_stop; fi
    DR_BIN=""
}
# Polls COUNT_CMD until it reaches WANT or TRIAL_TIMEOUT passes; sets DONE_N and DONE_T (when
# the count last moved).
wait_count() { # want count_cmd...
    local want=$1 n last_n=-1 deadline=$(( $(date +%s) + TRIAL_TIMEOUT ))
    shift
    DONE_T=$(now)
    while :; do
        n=$("$@")
        if [ "$n" != "$last_n" ]; then last_n=$n DONE_T=$(now); fi
        [ "$n" -ge "$want" ] && break
        [ "$(date +%s)" -lt "$deadline" ] || { log "only $n/$want delivered"; break; }
        sleep 0.05
    done
    DONE_N=$last_n
}

# Workload 6 (many): MESSAGES messages, message i to sink@d<i % MANY_DOMAINS>.many.bench, every
# domain's MX the one sink at .12. Workload 7 (dest): message i to sink@d<i % DEST_DOMAINS>.dest.bench,
# domain i's MX mx<i % DEST_MX>.dest.bench, DEST_MX sinks in one process (counters summed).
# benchtool load, 100 messages per client session, deliveries running.
trial_many() { # dr|base|pf many|dest
    local mta=$1 w=$2 t0 t1 rc=0 extra msgs tls conns most addrs domains
    PAUSED=false
    if [ "$w" = many ]; then
        addrs=$SINK_MANY:25 domains=$MANY_DOMAINS
    else
        addrs=$(for k in $(seq 0 $(( DEST_MX - 1 ))); do echo "$NET.$(( SINK_DEST0 + k )):25"; done |
            paste -sd,) domains=$DEST_DOMAINS
    fi
    start_sink "$T/sink-$w" "$addrs"
    start_mta "$mta"
    t0=$(now)
    extra=$(timeout "$TRIAL_TIMEOUT" "$BENCHTOOL" load "$MTA_IP:25" --sessions "$SESSIONS" \
        --count "$MESSAGES" --size "$SIZE" --per-session 100 --rcpt "sink@d{}.$w.bench" \
        --domains "$domains") || rc=$?
    t1=$(now)
    wait_count "$MESSAGES" sink_file_count "$T/sink-$w"
    sleep 0.2 # the sink rewrites its counters every 50 ms
    read -r msgs tls conns most <"$T/sink-$w/count" || true
    stop_mta "$mta"
    stop_sink
    python3 - "$mta" "$w" "$t0" "$t1" "$DONE_T" "${msgs:-0}" "$MESSAGES" "${conns:-0}" "${most:-0}" \
        "$rc" "$extra" "$domains" <<'EOF'
import json, sys
mta, w, t0, t1, t2, n, want, conns, most, rc, extra, domains = sys.argv[1:]
t0, t1, t2, n, want, conns = float(t0), float(t1), float(t2), int(n), int(want), int(conns)
print(json.dumps({"mta": mta, "workload": w, "domains": int(domains), "want": want,
    "delivered": n, "ingest_rate": want / (t1 - t0), "e2e_rate": n / (t2 - t0) if n >= want else 0.0,
    "sink_connections": conns, "sink_max_open": int(most),
    "connections_per_message": conns / max(n, 1), "load_rc": int(rc),
    "load": json.loads(extra) if extra else {}}))
EOF
}

# Workload 8 (slow): MESSAGES messages to the healthy destination (plain.bench, smtp-sink),
# alone, or with one message to slow.bench after every SLOW_EVERY of them (its sink waits
# SLOW_DELAY_MS before every reply). The figure: the healthy destination's delivered msg/s,
# from the start of the submission to its last arrival.
trial_slow() { # dr|pf alone|mixed
    local mta=$1 mode=$2 t0 t1 rc=0 extra base alt=() alt_want=0 smsgs=0 stls sconns=0 smost=0
    PAUSED=false
    if [ "$mode" = mixed ]; then
        start_sink "$T/sink-slow" "$SINK_SLOW:25" --delay-ms "$SLOW_DELAY_MS"
        alt=(--alt-rcpt sink@slow.bench --alt-every "$SLOW_EVERY")
        alt_want=$(( MESSAGES / SLOW_EVERY ))
    fi
    start_mta "$mta"
    base=$(sink_count plain)
    t0=$(now)
    extra=$(timeout "$TRIAL_TIMEOUT" "$BENCHTOOL" load "$MTA_IP:25" --sessions "$SESSIONS" \
        --count "$MESSAGES" --size "$SIZE" --per-session 100 --rcpt sink@plain.bench \
        "${alt[@]}") || rc=$?
    t1=$(now)
    plain_delivered() { echo $(( $(sink_count plain) - base )); }
    wait_count "$MESSAGES" plain_delivered
    if [ "$mode" = mixed ]; then
        read -r smsgs stls sconns smost <"$T/sink-slow/count" || true
    fi
    stop_mta "$mta"
    [ "$mode" = mixed ] && stop_sink
    python3 - "$mta" "slow_$mode" "$t0" "$t1" "$DONE_T" "$DONE_N" "$MESSAGES" "$alt_want" \
        "${smsgs:-0}" "${sconns:-0}" "${smost:-0}" "$rc" "$extra" <<'EOF'
import json, sys
mta, w, t0, t1, t2, n, want, alt_want, smsgs, sconns, smost, rc, extra = sys.argv[1:]
t0, t1, t2, n, want = float(t0), float(t1), float(t2), int(n), int(want)
print(json.dumps({"mta": mta, "workload": w, "want": want, "alt_want": int(alt_want),
    "delivered": n, "ingest_rate": (want + int(alt_want)) / (t1 - t0),
    "e2e_rate": n / (t2 - t0) if n >= want else 0.0,
    "slow_delivered": int(smsgs), "slow_connections": int(sconns), "slow_max_open": int(smost),
    "load_rc": int(rc), "load": json.loads(extra) if extra else {}}))
EOF
}

if runs 6 || runs 7 || runs 8; then
    if [ -n "$BASELINE_BIN" ]; then
        [ -x "$BASELINE_BIN" ] || die "BASELINE_BIN $BASELINE_BIN is not executable"
    fi
    for round in $(seq "$ROUNDS"); do
        if runs 6; then
            for mta in ${BASELINE_BIN:+base} dr pf; do
                log "round $round: workload 6 ($MANY_DOMAINS domains, one MX) on $(mta_name "$mta")"
                trial_many "$mta" many >"$T/trial.json"
                record_trial
            done
        fi
        if runs 7; then
            for mta in dr pf; do
                log "round $round: workload 7 ($DEST_DOMAINS domains, $DEST_MX MX hosts) on $(mta_name "$mta")"
                trial_many "$mta" dest >"$T/trial.json"
                record_trial
            done
        fi
        if runs 8; then
            for mta in dr pf; do
                for mode in alone mixed; do
                    log "round $round: workload 8 (healthy destination $mode) on $(mta_name "$mta")"
                    trial_slow "$mta" "$mode" >"$T/trial.json"
                    record_trial
                done
            done
        fi
    done
fi

# ------------------------------------------------------------------ workload 5
SCALE_DIR=$T/scale
mkdir -p "$SCALE_DIR"
if runs 5 && [ "$SCALE_PREFILL" -gt 0 ]; then
    t_scale=$(now)
    # danerelay: through the queue crate, with the relay's own configuration and options.
    log "workload 5: prefilling danerelay with $SCALE_PREFILL held messages of $SCALE_SIZE B"
    dr_config "$T/dr-full"
    timeout "$(remaining)" "$BENCHTOOL" prefill --config "$T/dr-full/danerelay.toml" \
        --count "$SCALE_PREFILL" --size "$SCALE_SIZE" >"$SCALE_DIR/dr-prefill.json" ||
        die "danerelay prefill failed"
    cat "$SCALE_DIR/dr-prefill.json" >&2
    log "workload 5: timing danerelay's queue open ($SCALE_PREFILL queued)"
    timeout "$(remaining)" "$BENCHTOOL" open-time --config "$T/dr-full/danerelay.toml" \
        >"$SCALE_DIR/dr-open.json" || die "open-time failed"
    cat "$SCALE_DIR/dr-open.json" >&2
    # The empty instance, created the same way (and restarted in every round like the full one).
    dr_config "$T/dr-empty"
    "$BENCHTOOL" prefill --config "$T/dr-empty/danerelay.toml" --count 0 >/dev/null ||
        die "creating the empty danerelay queue failed"
    PF=$T/pf-empty
    pf_config
    pf_start keep
    pf_stop

    # Postfix: one message through smtpd into hold/ (smtpd's HOLD action), then clones.
    log "workload 5: prefilling Postfix with $SCALE_PREFILL held messages of $SCALE_SIZE B"
    PF=$T/pf-full
    pf_config
    postconf -c "$PF/etc" -e 'smtpd_data_restrictions = check_client_access static:HOLD'
    pf_start keep
    timeout 60 smtp-source -m 1 -l "$SCALE_SIZE" -f bench@load.test -t sink@plain.bench \
        "$POSTFIX:25" >&2 || die "smtp-source (template message) failed"
    template=""
    for _ in $(seq 100); do
        # Postfix sets the owner execute bit on a queue file once it is complete.
        template=$(find "$PF/queue/hold" -type f -perm -u+x | head -1)
        [ -n "$template" ] && break
        sleep 0.1
    done
    pf_stop
    [ -n "$template" ] || die "the template message did not reach hold/: $(tail -3 "$PF/maillog")"
    postconf -c "$PF/etc" -X smtpd_data_restrictions
    # Queue ids: pf-clone writes short ids (enable_long_queue_ids = no, the default).
    [ "$(postconf -c "$PF/etc" -h enable_long_queue_ids)" = no ] ||
        die "pf-clone writes short queue ids only"
    depth=0
    if postconf -c "$PF/etc" -h hash_queue_names | tr -s ', ' '\n' | grep -qx hold; then
        depth=$(postconf -c "$PF/etc" -h hash_queue_depth)
    fi
    timeout "$(remaining)" "$BENCHTOOL" pf-clone --template "$template" --dir "$PF/queue/hold" \
        --count $(( SCALE_PREFILL - 1 )) --hash-depth "$depth" >"$SCALE_DIR/pf-clone.json" ||
        die "pf-clone failed"
    cat "$SCALE_DIR/pf-clone.json" >&2
    # postsuper's structure check (part of every "postfix start") renames queue files whose
    # name does not match their inode: it must find nothing to do. Timed: it is most of
    # Postfix's start-up with a large queue.
    t_ps=$(now)
    timeout "$(remaining)" postsuper -c "$PF/etc" >"$SCALE_DIR/postsuper.log" 2>&1 ||
        die "postsuper: $(cat "$SCALE_DIR/postsuper.log")"
    since "$t_ps" >"$SCALE_DIR/pf-postsuper-seconds"
    if grep -q 'inode' "$SCALE_DIR/postsuper.log"; then
        die "postsuper renamed cloned queue files: $(cat "$SCALE_DIR/postsuper.log")"
    fi
    PF=$T/pf
    # The prefill's dirty pages must not be written back during the trials.
    log "workload 5: sync"
    timeout "$(remaining)" sync
    du -sm "$T/dr-full/queue" "$T/pf-full/queue" >"$SCALE_DIR/du" 2>/dev/null || true
    log "workload 5: prefill ready after $(since "$t_scale") s; on disk (MB): $(tr '\n\t' '  ' <"$SCALE_DIR/du")"

    # Alternating: empty and prefilled, in swapped order every other round.
    for round in $(seq "$ROUNDS"); do
        order="empty full"
        if [ $(( round % 2 )) = 0 ]; then order="full empty"; fi
        for mta in dr pf; do
            for state in $order; do
                log "round $round: workload 5 on $(mta_name $mta), $state queue"
                run_trial "$mta" scale "$state" "$round"
                if [ "$mta" = pf ] && [ "$state" = full ] &&
                    grep -qs 'match inode' "$T/pf-full/start.log" "$T/pf-full/maillog"; then
                    log "WARNING: postsuper renamed prefilled queue files: $(grep -h 'inode' "$T/pf-full/start.log")"
                fi
            done
        done
    done
    # Still all there? (Held mail must not have been delivered or lost.) danerelay: the
    # queue's own count once it has recovered (benchtool open-time waits for that).
    timeout "$(remaining)" "$BENCHTOOL" open-time --config "$T/dr-full/danerelay.toml" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["held"])' \
        >"$SCALE_DIR/dr-held-after" || true
    find "$T/pf-full/queue/hold" -type f | wc -l >"$SCALE_DIR/pf-held-after"
    log "workload 5: held after the trials: danerelay $(cat "$SCALE_DIR/dr-held-after"), postfix $(cat "$SCALE_DIR/pf-held-after")"
    for m in dr pf; do
        [ "$(cat "$SCALE_DIR/$m-held-after")" = "$SCALE_PREFILL" ] ||
            broken "workload 5: $(mta_name $m) holds $(cat "$SCALE_DIR/$m-held-after") of $SCALE_PREFILL prefilled messages"
    done
    t_rm=$(now)
    remove_tree "$T/pf-full"
    rm -rf "$T/dr-full" "$T/dr-empty" "$T/pf-empty"
    log "workload 5: prefill removed in $(since "$t_rm") s; workload 5 took $(since "$t_scale") s"
    since "$t_scale" >"$SCALE_DIR/seconds"
fi
# The queue crate's own figure (enqueue through the API, no SMTP), as before.
if runs 5 && [ "$QUEUE_BENCH_PREFILL" -gt 0 ]; then
    log "workload 5: queue crate bench, prefill $QUEUE_BENCH_PREFILL (danerelay only)"
    (cd "$ROOT" && QUEUE_BENCH_PREFILL=$QUEUE_BENCH_PREFILL QUEUE_BENCH_ONLY=scale \
        QUEUE_BENCH_DIR=$T timeout "$(remaining)" cargo bench -p danerelay-queue \
        >"$SCALE_DIR/queue-crate.log" 2>&1) ||
        broken "the queue crate bench failed: $(tail -5 "$SCALE_DIR/queue-crate.log")"
    cat "$SCALE_DIR/queue-crate.log" >&2
fi

# ------------------------------------------------------------------ table
mkdir -p "$(dirname "$OUT")"
EXTRA_PARAMS=$(printf '{"many_domains": %d, "dest_domains": %d, "dest_mx": %d, "slow_delay_ms": %d, "slow_every": %d, "quick": %s, "started": "%s", "load_at_start": "%s"}' \
    "$MANY_DOMAINS" "$DEST_DOMAINS" "$DEST_MX" "$SLOW_DELAY_MS" "$SLOW_EVERY" \
    "$([ -n "${QUICK:-}" ] && echo true || echo false)" "$STARTED" "$LOAD_START")
python3 - "$RESULTS" "$OUT" "$SCALE_DIR" "$SCALE_PREFILL" "$SCALE_SIZE" "$QUEUE_BENCH_PREFILL" \
    "$MESSAGES" "$SESSIONS" "$SIZE" "$ROUNDS" "$WORKLOADS" "$EXTRA_PARAMS" <<'EOF'
import json, os, platform, re, statistics, sys, time
path, out, sdir, prefill, ssize, qprefill, msgs, sess, size, rounds, workloads, extra = sys.argv[1:]
prefill, qprefill = int(prefill), int(qprefill)
trials = [json.loads(l) for l in open(path) if l.strip()]
def read(name, parse=json.loads):
    try:
        return parse(open(os.path.join(sdir, name)).read())
    except (OSError, ValueError):
        return None
def vals(mta, w, f):
    return [f(t) for t in trials if t["mta"] == mta and t["workload"] == w]
def med(mta, w, f):
    v = vals(mta, w, f)
    return statistics.median(v) if v else float("nan")
def round_ratios(mta):
    # workload 5: prefilled / empty ingest rate per round (adjacent trials).
    by = {}
    for t in trials:
        if t["mta"] == mta and t["workload"] in ("scale_empty", "scale_full"):
            by.setdefault(t["round"], {})[t["workload"]] = t["ingest_rate"]
    return [v["scale_full"] / v["scale_empty"] for _, v in sorted(by.items()) if len(v) == 2]
def paired(mta):
    r = round_ratios(mta)
    return statistics.median(r) if r else float("nan")
def slow_ratios(mta):
    # workload 8: healthy msg/s with the slow destination / alone, per round (in run order).
    alone, mixed = (vals(mta, w, lambda t: t["e2e_rate"]) for w in ("slow_alone", "slow_mixed"))
    return [m / a for a, m in zip(alone, mixed) if a]
def slow_paired(mta):
    r = slow_ratios(mta)
    return statistics.median(r) if r else float("nan")
def per_msg(t):
    return t["sink_connections"] / max(t["delivered"], 1)
n = f"{prefill:,}"
rows = [
  ("1 ingest (smtp-source), deliveries paused, accepted msg/s", "ingest", lambda t: t["ingest_rate"], True),
  ("1 ingest (smtp-source -d: 50 sessions kept), paused, msg/s", "ingest_kept", lambda t: t["ingest_rate"], True),
  ("1 ingest (benchtool), deliveries paused, accepted msg/s", "latency", lambda t: t["load"]["rate"], True),
  ("1 ingest while delivering to the sink, accepted msg/s", "plain", lambda t: t["ingest_rate"], True),
  ("1 DATA-end -> 250, p50 ms", "latency", lambda t: t["load"]["p50_ms"], False),
  ("1 DATA-end -> 250, p99 ms", "latency", lambda t: t["load"]["p99_ms"], False),
  ("2 end to end plaintext, delivered msg/s", "plain", lambda t: t["e2e_rate"], True),
  ("3 end to end DANE, delivered msg/s", "dane", lambda t: t["e2e_rate"], True),
  ("3 delivered over TLS at the sink, %", "dane", lambda t: 100.0 * t["sink_tls"] / max(t["delivered"], 1), True),
  ("3 connections per message at the TLS sink", "dane", per_msg, False),
  ("3 DANE vs Postfix tuned (TLS reuse, cache), msg/s", "dane", lambda t: t["e2e_rate"], True, "pft"),
  ("3 vs Postfix tuned: connections per message", "dane", per_msg, False, "pft"),
  ("4 peak RSS during 2 (sum of processes), MiB", "plain", lambda t: t["peak_rss_kb"] / 1024, False),
  ("4 peak PSS during 2 (shared pages split), MiB", "plain", lambda t: t["peak_pss_kb"] / 1024, False),
  ("5 ingest msg/s, empty", "scale_empty", lambda t: t["ingest_rate"], True),
  (f"5 ingest msg/s, {n} queued", "scale_full", lambda t: t["ingest_rate"], True),
  ("5 queued/empty ratio", None, paired, True),
  ("5 start-up s, empty", "scale_empty", lambda t: t["startup_s"], False),
  (f"5 start-up s, {n} queued", "scale_full", lambda t: t["startup_s"], False),
  (f"5 peak PSS during ingest, {n} queued, MiB", "scale_full", lambda t: t["peak_pss_kb"] / 1024, False),
  ("6 many domains, one MX: delivered msg/s", "many", lambda t: t["e2e_rate"], True),
  ("6 many domains, one MX: connections per message", "many", lambda t: t["connections_per_message"], False),
  ("6 many domains, one MX: most open at once", "many", lambda t: t["sink_max_open"], False),
  ("7 many destinations: delivered msg/s", "dest", lambda t: t["e2e_rate"], True),
  ("7 many destinations: connections per message", "dest", lambda t: t["connections_per_message"], False),
  ("7 many destinations: most open at once (all MX)", "dest", lambda t: t["sink_max_open"], False),
  ("8 healthy destination alone, delivered msg/s", "slow_alone", lambda t: t["e2e_rate"], True),
  ("8 healthy destination with slow one, msg/s", "slow_mixed", lambda t: t["e2e_rate"], True),
  ("8 with slow / alone ratio", None, slow_paired, True),
  ("8 connections open to the slow destination", "slow_mixed", lambda t: t["slow_max_open"], False),
]
table = []
print()
print(f"{'workload':50} {'danerelay':>10} {'postfix':>10} {'dr/pf':>7}")
for name, w, f, higher, *other in rows:
    pf = other[0] if other else "pf"
    if w is None:
        d, p = f("dr"), f(pf)
    else:
        d, p = med("dr", w, f), med(pf, w, f)
    if d != d or p != p:
        continue  # not run
    ratio = d / p if p else float("nan")
    prec = 2 if "ratio" in name or "start-up" in name or "per message" in name else 1
    table.append({"workload": name, "danerelay": d, "postfix": p, "postfix_variant": pf,
                  "ratio": ratio, "higher_is_better": higher})
    print(f"{name:50} {d:10.{prec}f} {p:10.{prec}f} {ratio:7.2f}")
dv = [t for t in trials if t["mta"] == "dr" and t["workload"] == "dane"]
if dv:
    share = 100.0 * sum(t["logged_verified"] for t in dv) / max(sum(t["logged_sent"] for t in dv), 1)
    print(f"{'3 danerelay deliveries logged tls=dane-verified, %':50} {share:10.1f}")
else:
    share = None
if any(t["mta"] == "base" for t in trials):
    print("6, danerelay before (BASELINE_BIN) -> after, same rounds:")
    for name, w, f, higher, *_ in rows:
        if w == "many":
            b, d = med("base", w, f), med("dr", w, f)
            print(f"  {name:48} {b:10.2f} -> {d:10.2f}  ({d / b if b else float('nan'):.2f}x)")
print(f"(medians of {rounds} rounds, {msgs} messages of {size} B per trial, {sess} sessions)")

scale = None
if any(t["workload"].startswith("scale_") for t in trials):
    du = {}
    for line in (read("du", str) or "").splitlines():
        mb, p = line.split("\t")
        du["danerelay" if "/dr-full/" in p else "postfix"] = int(mb)
    scale = {"prefill": prefill, "prefill_size": int(ssize), "queue": "hold",
             "danerelay_prefill": read("dr-prefill.json"), "danerelay_open": read("dr-open.json"),
             "postfix_clone": read("pf-clone.json"), "postfix_postsuper_s": read("pf-postsuper-seconds"),
             "disk_mb": du,
             "held_after": {"danerelay": read("dr-held-after"), "postfix": read("pf-held-after")},
             "queued_empty_ratio_per_round": {m: round_ratios(m) for m in ("dr", "pf")},
             "seconds": read("seconds")}
    o, c, pr = scale["danerelay_open"] or {}, scale["postfix_clone"] or {}, scale["danerelay_prefill"] or {}
    print(f"(5: queued = {n} messages of {ssize} B on hold; queued/empty = median of per-round ratios;")
    print(f"    danerelay prefill through the queue crate {pr.get('seconds', 0):.0f} s, Postfix clone of one queue file {c.get('seconds', 0):.0f} s;")
    print(f"    danerelay queue open with {n}: sled {o.get('sled_open_s', 0):.1f} s + record scan {o.get('meta_scan_s', 0):.1f} s"
          f" + the rest {o.get('recovery_rest_s', 0):.1f} s = Queue::open {o.get('queue_open_s', 0):.1f} s,"
          f" counts complete (background scan over) after {o.get('recovered_s', 0):.1f} s;"
          f" disk {du})")
queue_crate = None
text = read("queue-crate.log", str)
if text:
    e = re.search(r"empty queue: .* median ([0-9.]+)", text)
    f = re.search(r"full queue:  .* median ([0-9.]+)", text)
    queue_crate = {"prefill": qprefill, "empty_rate": float(e.group(1)) if e else None,
                   "full_rate": float(f.group(1)) if f else None,
                   "raw": text[text.find("## enqueue rate"):][:1500]}
    if e and f:
        name = f"5 enqueue msg/s, {qprefill:,} queued vs empty (queue crate)"
        fr, er = queue_crate["full_rate"], queue_crate["empty_rate"]
        print(f"{name:50} {fr:10.0f} {er:10.0f} {fr/er:7.2f}  (queued vs empty, danerelay only)")
    else:
        print(queue_crate["raw"])
json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"cores": os.cpu_count(), "cpu": platform.processor() or open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(" \t:"),
                       "load": open("/proc/loadavg").read().split()[:3]},
           "params": {"workloads": workloads.split(), "rounds": int(rounds), "messages": int(msgs),
                      "sessions": int(sess), "size": int(size), "scale_prefill": prefill,
                      "scale_size": int(ssize), "queue_bench_prefill": qprefill,
                      **json.loads(extra)},
           "slow_ratio_per_round": {m: slow_ratios(m) for m in ("dr", "pf")},
           "table": table, "danerelay_dane_verified_pct": share, "trials": trials,
           "scale": scale, "queue_crate": queue_crate},
          open(out, "w"), indent=1)
print("written", out)
EOF
