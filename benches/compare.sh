#!/usr/bin/env bash
# danerelay vs Postfix on this machine, in one run. See README.md "Performance".
#
#   sudo benches/compare.sh            # ~10-15 min with the defaults below
#
# Knobs (environment):
#   ROUNDS=3          rounds; each runs every workload on danerelay, then Postfix
#   MESSAGES=5000     messages per trial (workloads 1-3)
#   SESSIONS=50       concurrent client sessions (smtp-source -s, benchtool load --sessions)
#   SIZE=10240        message size in bytes (smtp-source -l)
#   TRIAL_TIMEOUT=180 seconds a trial may take before it is abandoned (and reported)
#   MAX_SECONDS=1500  hard limit for the whole script
#   SCALE_PREFILL=100000  workload 5: messages queued before measuring (0 = skip;
#                     1000000 is the full figure, and takes ~3 min more)
#   OUT=benches/results/latest.json
#   SKIP_INSTALL=1    do not apt-get install missing tools
#
# Everything listens on 127.0.77.0/24 only:
#   .2:25 danerelay (tls=none, trusted 127/8), .2:9587 its HTTP
#   .3:25 Postfix (private instance: own config and queue dirs under a temp dir)
#   .10:25 smtp-sink (MX of plain.bench)   .11:25 benchtool sink with STARTTLS (MX of dane.bench)
#   .53:53 unbound (validating; trust anchor = the bench. key)   .54:53 knotd (signed zone bench.)
# Postfix's smtp client uses the libc resolver, so Postfix runs in a private mount namespace
# (unshare -m) where /etc/resolv.conf is bind-mounted to "nameserver 127.0.77.53 / options
# trust-ad" (glibc passes the AD bit on only with trust-ad).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-5000}
SESSIONS=${SESSIONS:-50}
SIZE=${SIZE:-10240}
TRIAL_TIMEOUT=${TRIAL_TIMEOUT:-180}
MAX_SECONDS=${MAX_SECONDS:-1500}
SCALE_PREFILL=${SCALE_PREFILL:-100000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/benches/results/latest.json}

NET=127.0.77
RELAY=$NET.2 POSTFIX=$NET.3 SINK_PLAIN=$NET.10 SINK_TLS=$NET.11 UNBOUND=$NET.53 KNOT=$NET.54

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Bounded: the whole run is re-executed under timeout(1); its TERM runs the cleanup trap.
if [ -z "${_BENCH_TIMED:-}" ]; then
    export _BENCH_TIMED=1
    exec timeout --foreground -s TERM "$MAX_SECONDS" "$0" "$@"
fi
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
PIDS=()
cleanup() {
    set +e
    trap - EXIT INT TERM
    [ -f "$T/pf/main.cf" ] && postfix -c "$T/pf" stop >/dev/null 2>&1
    [ -f "$T/dr.pid" ] && kill "$(cat "$T/dr.pid")" 2>/dev/null
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ------------------------------------------------------------------ build
log "building (release: cargo bench --no-run builds the danerelay binary too)"
BENCHTOOL=$(cd "$ROOT" && cargo bench --bench benchtool --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("executable") and m["target"]["name"]=="benchtool": print(m["executable"])')
DANERELAY=$ROOT/target/release/danerelay
[ -x "$BENCHTOOL" ] && [ -x "$DANERELAY" ] || die "build failed"

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

# ------------------------------------------------------------------ DNS
log "signing zone bench. and starting knotd + unbound"
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
EOF
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
# danerelay: same durability as always (fsync before 250); DANE; our unbound.
# dr_start paused: deliveries paused (workload 1 measures accepting mail only).
dr_start() {
    rm -rf "$T/dr"
    mkdir -p "$T/dr"
    cat >"$T/dr/danerelay.toml" <<EOF
hostname = "danerelay.bench.test"
shutdown_grace = "3s"
[[listener]]
address = "$RELAY:25"
tls = "none"
[auth]
trusted_networks = ["127.0.0.0/8"]
sender_policy = "any"
[queue]
path = "$T/dr/queue"
[dns]
nameservers = ["$UNBOUND:53"]
dnssec = "trust-ad"
dnssec_probe = "bench."
[delivery]
tls = "dane"
paused = $([ "${1:-}" = paused ] && echo true || echo false)
[http]
address = "$RELAY:9587"
EOF
    "$DANERELAY" serve --config "$T/dr/danerelay.toml" >"$T/dr/log" 2>&1 &
    DR_PID=$!
    echo "$DR_PID" >"$T/dr.pid"
    for _ in $(seq 100); do
        curl -fs "http://$RELAY:9587/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "danerelay did not become ready: $(tail -5 "$T/dr/log")"
}
dr_stop() {
    kill -TERM "$DR_PID" 2>/dev/null || true
    wait "$DR_PID" 2>/dev/null || true
}
dr_pids() { echo "$DR_PID"; }

# Postfix: a private instance; queue files are fsynced by Postfix itself (default).
# pf_start paused: without the queue manager, so nothing is delivered (workload 1).
pf_start() {
    rm -rf "$T/pf"
    mkdir -p "$T/pf/queue" "$T/pf/data"
    chown postfix "$T/pf/data"
    sed -E -e 's/^([a-z]+[[:space:]]+(inet|unix|fifo|unix-dgram|pass)[[:space:]]+[^[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+)[-y]/\1n/' \
        -e "s/^smtp( +inet)/$POSTFIX:25\1/" /usr/share/postfix/master.cf.dist >"$T/pf/master.cf"
    if [ "${1:-}" = paused ]; then
        sed -i -E 's/^(qmgr[[:space:]])/#\1/' "$T/pf/master.cf"
        grep -q '^qmgr' "$T/pf/master.cf" && die "could not pause Postfix deliveries"
    fi
    grep -q '^postlog' "$T/pf/master.cf" ||
        echo 'postlog   unix-dgram n  -       n       -       1       postlogd' >>"$T/pf/master.cf"
    cat >"$T/pf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $T/pf/queue
data_directory = $T/pf/data
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
maillog_file = $T/pf/maillog
smtp_dns_support_level = dnssec
smtp_tls_security_level = dane
smtp_tls_loglevel = 1
smtp_tls_session_cache_database = btree:\${data_directory}/smtp_scache
EOF
    # The private mount namespace gives Postfix (and only it) our resolv.conf.
    unshare -m --propagation private sh -c \
        "mount --bind '$T/resolv.conf' /etc/resolv.conf && postfix -c '$T/pf' start" \
        >"$T/pf/start.log" 2>&1 || die "postfix start: $(cat "$T/pf/start.log")"
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/$POSTFIX/25") 2>/dev/null && return 0
        sleep 0.1
    done
    die "postfix does not listen: $(cat "$T/pf/start.log" "$T/pf/maillog" 2>/dev/null | tail)"
}
pf_stop() {
    postfix -c "$T/pf" stop >/dev/null 2>&1 || true
    for _ in $(seq 50); do
        [ -f "$T/pf/queue/pid/master.pid" ] && kill -0 "$(cat "$T/pf/queue/pid/master.pid")" 2>/dev/null ||
            return 0
        sleep 0.1
    done
    postfix -c "$T/pf" abort >/dev/null 2>&1 || true
}
pf_pids() {
    local master
    master=$(tr -d ' ' <"$T/pf/queue/pid/master.pid" 2>/dev/null) || return 0
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

# One trial: fresh MTA, submit MESSAGES, wait for them at the sink (unless deliveries are
# paused: workload 1). Prints a JSON object.
trial() { # mta workload(ingest|latency|plain|dane)
    local mta=$1 w=$2 ip sink base t0 t1 t2 n last_n sampler="" mem="0 0" extra="{}" rc=0
    local paused=""
    case $w in ingest | latency) paused=paused ;; esac
    [ "$mta" = dr ] && ip=$RELAY || ip=$POSTFIX
    [ "$w" = dane ] && sink=tls || sink=plain
    "${mta}_start" $paused
    base=$(sink_count "$sink")
    local tls_base; tls_base=$(sink_tls_count)
    if [ "$w" = plain ]; then
        sample_memory "$mta" >"$T/mem" &
        sampler=$!
    fi
    t0=$(now)
    if [ "$w" = latency ]; then
        extra=$(timeout "$TRIAL_TIMEOUT" "$BENCHTOOL" load "$ip:25" --sessions "$SESSIONS" \
            --count "$MESSAGES" --size "$SIZE" --per-session 1 --rcpt sink@plain.bench) || rc=$?
    else
        timeout "$TRIAL_TIMEOUT" smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" \
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
    if [ -n "$sampler" ]; then kill -TERM "$sampler"; wait "$sampler" || true; mem=$(cat "$T/mem"); fi
    local tls_n=$(( $(sink_tls_count) - tls_base ))
    local verified=0 sent=0
    if [ "$mta" = dr ]; then
        sent=$(grep -c 'status=sent' "$T/dr/log" || true)
        verified=$(grep 'status=sent' "$T/dr/log" | grep -c 'tls=dane-verified' || true)
        dr_stop
    else
        sleep 0.5  # postlogd writes asynchronously
        sent=$(grep -c 'status=sent' "$T/pf/maillog" || true)
        # Postfix logs TLS per connection, not per message: share of verified connections.
        verified=$(grep -c 'Verified TLS connection established' "$T/pf/maillog" || true)
        local conns; conns=$(grep -c 'TLS connection established' "$T/pf/maillog" || true)
        [ "$w" = dane ] && log "postfix: $verified of $conns TLS connections verified"
        pf_stop
    fi
    python3 - "$mta" "$w" "$t0" "$t1" "$t2" "$last_n" "$MESSAGES" "$mem" "$sent" "$verified" \
        "$tls_n" "$rc" "$extra" <<'EOF'
import json, sys
mta, w, t0, t1, t2, n, want, mem, sent, ver, tls_n, rc, extra = sys.argv[1:]
t0, t1, t2, n, want = float(t0), float(t1), float(t2), int(n), int(want)
rss, pss = (int(x) for x in mem.split())
r = {"mta": mta, "workload": w, "delivered": n, "submitted_s": t1 - t0,
     "ingest_rate": want / (t1 - t0), "e2e_rate": n / (t2 - t0) if n >= want else 0.0,
     "logged_sent": int(sent), "logged_verified": int(ver), "sink_tls": int(tls_n),
     "peak_rss_kb": rss, "peak_pss_kb": pss, "load_rc": int(rc)}
r.update({"load": json.loads(extra)} if extra != "{}" else {})
print(json.dumps(r))
EOF
}

# ------------------------------------------------------------------ rounds
RESULTS=$T/trials.jsonl
: >"$RESULTS"
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
    for w in ingest latency plain dane; do
        for mta in dr pf; do
            log "round $round: $w on $([ $mta = dr ] && echo danerelay || echo postfix)"
            trial "$mta" "$w" >"$T/trial.json"
            cat "$T/trial.json" >>"$RESULTS"
            cat "$T/trial.json" >&2
        done
    done
done

# ------------------------------------------------------------------ workload 5
SCALE_JSON='null'
if [ "$SCALE_PREFILL" -gt 0 ]; then
    log "workload 5: queue crate bench, prefill $SCALE_PREFILL (danerelay only)"
    SCALE_JSON=$(cd "$ROOT" && QUEUE_BENCH_PREFILL=$SCALE_PREFILL QUEUE_BENCH_ONLY=scale \
        timeout 900 cargo bench -p danerelay-queue >"$T/scale.log" 2>&1
        cat "$T/scale.log" >&2
        python3 -c '
import json, re, sys
text = sys.stdin.read()
e = re.search(r"empty queue: .* median ([0-9.]+)", text)
f = re.search(r"full queue:  .* median ([0-9.]+)", text)
print(json.dumps({"empty_rate": float(e.group(1)) if e else None,
                  "full_rate": float(f.group(1)) if f else None,
                  "raw": text[text.find("## enqueue rate"):][:1500]}))' <"$T/scale.log") || SCALE_JSON='null'
fi

# ------------------------------------------------------------------ table
mkdir -p "$(dirname "$OUT")"
python3 - "$RESULTS" "$OUT" "$SCALE_PREFILL" "$MESSAGES" "$SESSIONS" "$SIZE" "$ROUNDS" <<EOF
import json, statistics, sys, platform, os, time
path, out, prefill, msgs, sess, size, rounds = sys.argv[1:]
trials = [json.loads(l) for l in open(path) if l.strip()]
def med(mta, w, f):
    v = [f(t) for t in trials if t["mta"] == mta and t["workload"] == w]
    return statistics.median(v) if v else float("nan")
rows = [
  ("1 ingest (smtp-source), deliveries paused, accepted msg/s", "ingest", lambda t: t["ingest_rate"], True),
  ("1 ingest (benchtool), deliveries paused, accepted msg/s", "latency", lambda t: t["load"]["rate"], True),
  ("1 ingest while delivering to the sink, accepted msg/s", "plain", lambda t: t["ingest_rate"], True),
  ("1 DATA-end -> 250, p50 ms", "latency", lambda t: t["load"]["p50_ms"], False),
  ("1 DATA-end -> 250, p99 ms", "latency", lambda t: t["load"]["p99_ms"], False),
  ("2 end to end plaintext, delivered msg/s", "plain", lambda t: t["e2e_rate"], True),
  ("3 end to end DANE, delivered msg/s", "dane", lambda t: t["e2e_rate"], True),
  ("3 delivered over TLS at the sink, %", "dane", lambda t: 100.0 * t["sink_tls"] / max(t["delivered"], 1), True),
  ("4 peak RSS during 2 (sum of processes), MiB", "plain", lambda t: t["peak_rss_kb"] / 1024, False),
  ("4 peak PSS during 2 (shared pages split), MiB", "plain", lambda t: t["peak_pss_kb"] / 1024, False),
]
table = []
print()
print(f"{'workload':50} {'danerelay':>10} {'postfix':>10} {'dr/pf':>7}")
for name, w, f, higher in rows:
    d, p = med("dr", w, f), med("pf", w, f)
    ratio = d / p if p else float("nan")
    table.append({"workload": name, "danerelay": d, "postfix": p, "ratio": ratio, "higher_is_better": higher})
    print(f"{name:50} {d:10.1f} {p:10.1f} {ratio:7.2f}")
dv = [t for t in trials if t["mta"] == "dr" and t["workload"] == "dane"]
share = 100.0 * sum(t["logged_verified"] for t in dv) / max(sum(t["logged_sent"] for t in dv), 1)
print(f"{'3 danerelay deliveries logged tls=dane-verified, %':50} {share:10.1f}")
print(f"(medians of {rounds} rounds, {msgs} messages of {size} B per trial, {sess} sessions)")
scale = json.loads(r'''$SCALE_JSON''')
if scale:
    e, f = scale.get("empty_rate"), scale.get("full_rate")
    if e and f:
        print(f"{'5 enqueue msg/s, ' + prefill + ' queued vs empty (queue crate)':50} {f:10.0f} {e:10.0f} {f/e:7.2f}  (full vs empty, danerelay only)")
    else:
        print(scale["raw"])
json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"cores": os.cpu_count(), "cpu": platform.processor() or open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(" \t:"),
                       "load": open("/proc/loadavg").read().split()[:3]},
           "params": {"rounds": int(rounds), "messages": int(msgs), "sessions": int(sess), "size": int(size), "scale_prefill": int(prefill)},
           "table": table, "danerelay_dane_verified_pct": share, "trials": trials, "scale": scale},
          open(out, "w"), indent=1)
print("written", out)
EOF
