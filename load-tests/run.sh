#!/usr/bin/env bash
# Side-by-side load test on this machine, in one run: the origin directly, nginx, HAProxy and
# Portcullis as plain reverse proxies in front of the same origin, one worker each, measured
# with wrk. Prints a markdown table with every target's throughput as a ratio to nginx's.
#
#   load-tests/run.sh                      # ROUNDS=3 DURATION=5
#   ROUNDS=5 DURATION=10 load-tests/run.sh
#
# Environment:
#   ROUNDS          rounds; every round measures every target once, order rotated (default 3)
#   DURATION        seconds of each measured wrk run (default 5)
#   ONLY            space-separated targets to measure (default: all), e.g.
#                   ONLY="nginx portcullis portcullis-rs256" load-tests/run.sh
#   WARMUP          seconds of the unmeasured wrk run per target before round 1 (default 2)
#   WRK_THREADS     wrk -t (default 2)
#   WRK_CONNECTIONS wrk -c (default 64)
#   JWT=0, APIKEY=0, INTROSPECTION=0  leave those groups of targets out
#   PORTCULLIS_BIN  use this binary instead of building target/release/portcullis
#   NO_INSTALL=1    never apt-get install; fail if wrk, nginx, haproxy or curl is missing
#
# Everything runs on 127.0.0.1. Every process started here is stopped on exit. Raw wrk outputs,
# logs and the table are kept in load-tests/out/<timestamp>/ (gitignored).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-64}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PEERS=$HERE/peers
RUN_DIR=$HERE/out/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RUN_DIR"

# The targets, in the order of the table, and the port each listens on.
TARGETS=(origin nginx haproxy pingora-bare portcullis)
declare -A PORT=([origin]=18080 [nginx]=18081 [haproxy]=18082 [pingora-bare]=18091 [portcullis]=18089)
# JWT on every request (JWT=0 leaves these out): HAProxy's jwt_verify beside Portcullis with its
# verified-token cache off and on, for RS256, ES256 and HS256. PROC names the process measured,
# URLPATH the path requested, TOKEN_ALG the token sent.
declare -A PROC=() URLPATH=() TOKEN_ALG=()
if [ "${JWT:-1}" = 1 ]; then
    for alg in rs256 es256 hs256; do
        TARGETS+=("haproxy-$alg" "portcullis-$alg-nocache" "portcullis-$alg")
        PROC[haproxy-$alg]=haproxy
        PROC[portcullis-$alg-nocache]=portcullis
        PROC[portcullis-$alg]=portcullis
        URLPATH[portcullis-$alg-nocache]=/jwt/$alg-nocache
        URLPATH[portcullis-$alg]=/jwt/$alg
        TOKEN_ALG[haproxy-$alg]=$alg
        TOKEN_ALG[portcullis-$alg-nocache]=$alg
        TOKEN_ALG[portcullis-$alg]=$alg
        PORT[portcullis-$alg-nocache]=18089
        PORT[portcullis-$alg]=18089
    done
    PORT[haproxy-rs256]=18083
    PORT[haproxy-hs256]=18084
    PORT[haproxy-es256]=18085
fi
# API keys (APIKEY=0 leaves these out): a key on every request, alone and with a local rate
# limit high enough never to trigger.
declare -A HDR=()
if [ "${APIKEY:-1}" = 1 ]; then
    TARGETS+=(portcullis-apikey portcullis-apikey-limit portcullis-apikey-redis)
    for t in portcullis-apikey portcullis-apikey-limit portcullis-apikey-redis; do
        PROC[$t]=portcullis
        PORT[$t]=18089
        HDR[$t]=apikey
    done
    URLPATH[portcullis-apikey]=/key
    URLPATH[portcullis-apikey-limit]=/key-limited
    # The same route on a second Portcullis whose limits live in Redis (a local redis-server,
    # no persistence); its CPU column counts Portcullis only, Redis's is logged apart.
    PROC[portcullis-apikey-redis]=portcullis-redis
    PORT[portcullis-apikey-redis]=18090
    PORT[redis]=18379
    URLPATH[portcullis-apikey-redis]=/key-limited
fi
# Opaque tokens (INTROSPECTION=0 leaves this out): one token on every request, introspected
# once at a stand-in endpoint (nginx, see origin.conf) and then served from the cache.
if [ "${INTROSPECTION:-1}" = 1 ]; then
    TARGETS+=(portcullis-introspection)
    PROC[portcullis-introspection]=portcullis
    PORT[portcullis-introspection]=18089
    URLPATH[portcullis-introspection]=/introspected
    HDR[portcullis-introspection]=opaque
fi
if [ -n "${ONLY:-}" ]; then
    selected=()
    for t in "${TARGETS[@]}"; do
        case " $ONLY " in *" $t "*) selected+=("$t") ;; esac
    done
    [ ${#selected[@]} -gt 0 ] || { echo "ONLY names no known target" >&2; exit 2; }
    TARGETS=("${selected[@]}")
fi
proc_of() { echo "${PROC[$1]:-$1}"; }
url_of() { echo "http://127.0.0.1:${PORT[$1]}${URLPATH[$1]:-/}"; }
# wrk/curl arguments for the target's Authorization header, if any.
auth_args() {
    local alg=${TOKEN_ALG[$1]:-}
    [ -n "$alg" ] && printf '%s\n' -H "Authorization: Bearer $(cat "$RUN_DIR/$alg.token")"
    case "${HDR[$1]:-}" in
        apikey) printf '%s\n' -H "X-API-Key: $(cat "$RUN_DIR/apikey.key")" ;;
        opaque) printf '%s\n' -H "Authorization: Bearer bench-opaque-token-0001" ;;
    esac
    return 0
}
ADMIN_PORT=19901
declare -A PID=()

log() { printf '[run.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- stopping what we started
stop_all() {
    local name pid deadline
    if [ -n "${WRK_PID:-}" ]; then kill -TERM "$WRK_PID" 2>/dev/null || true; fi
    for name in "${!PID[@]}"; do
        pid=${PID[$name]}
        kill -TERM "$pid" 2>/dev/null || true
    done
    deadline=$((SECONDS + 5))
    for name in "${!PID[@]}"; do
        pid=${PID[$name]}
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) still running after 5s: SIGKILL"
            # nginx's worker is the master's child: take it down with the master.
            pkill -KILL -P "$pid" 2>/dev/null || true
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    PID=()
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

find_tool() { # command [extra dirs...]: prints its path or nothing
    local cmd=$1 d
    shift
    if command -v "$cmd" >/dev/null 2>&1; then command -v "$cmd"; return; fi
    for d in "$@" /usr/sbin /sbin; do
        if [ -x "$d/$cmd" ]; then echo "$d/$cmd"; return; fi
    done
}

install_missing() {
    local missing=()
    [ -n "$(find_tool wrk)" ] || missing+=(wrk)
    [ -n "$(find_tool nginx)" ] || missing+=(nginx-light)
    [ -n "$(find_tool haproxy)" ] || missing+=(haproxy)
    [ -n "$(find_tool curl)" ] || missing+=(curl)
    if [ "${APIKEY:-1}" = 1 ]; then [ -n "$(find_tool redis-server)" ] || missing+=(redis-server); fi
    [ ${#missing[@]} -eq 0 ] && return
    [ "${NO_INSTALL:-0}" = 1 ] && die "missing: ${missing[*]} (NO_INSTALL=1)"
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

install_missing
WRK=$(find_tool wrk)
NGINX=$(find_tool nginx)
HAPROXY=$(find_tool haproxy)
if [ -z "$WRK" ] || [ -z "$NGINX" ] || [ -z "$HAPROXY" ]; then die "wrk, nginx or haproxy not found"; fi

if [ -n "${PORTCULLIS_BIN:-}" ]; then
    PORTCULLIS=$PORTCULLIS_BIN
else
    log "cargo build --release (a no-op when up to date)"
    (cd "$ROOT" && cargo build --release --quiet --bin portcullis --example bare_pingora) >&2
    PORTCULLIS=$ROOT/target/release/portcullis
fi
# The floor: Pingora with no hooks but upstream_peer (load-tests/bare_pingora.rs).
BARE=${BARE_PINGORA_BIN:-$ROOT/target/release/examples/bare_pingora}
[ -x "$PORTCULLIS" ] || die "no portcullis binary at $PORTCULLIS"
[ -x "$BARE" ] || die "no bare_pingora binary at $BARE (cargo build --release --example bare_pingora)"

# ---------------------------------------------------------------- configs
for f in origin.conf nginx-proxy.conf haproxy.cfg portcullis.yaml portcullis-redis.yaml; do
    sed "s|@RUN_DIR@|$RUN_DIR|g" "$PEERS/$f" >"$RUN_DIR/$f"
done
# nginx's workers run as an unprivileged user when started as root: let them into the run dir.
chmod 755 "$RUN_DIR"

# Keys, the HMAC secret and one token per algorithm (iss/aud/exp as both proxies check them),
# signed with openssl; ES256 signatures are converted from DER to JOSE's r||s.
openssl genrsa -out "$RUN_DIR/rs256.pem" 2048 2>/dev/null
openssl rsa -in "$RUN_DIR/rs256.pem" -pubout -out "$RUN_DIR/rs256-public.pem" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$RUN_DIR/es256.pem" 2>/dev/null
openssl ec -in "$RUN_DIR/es256.pem" -pubout -out "$RUN_DIR/es256-public.pem" 2>/dev/null
printf '%s' "bench-hs256-secret-0123456789abcdef" >"$RUN_DIR/hs256.secret"
printf '%s' "bench-introspection-client-secret" >"$RUN_DIR/introspection.secret"
python3 - "$RUN_DIR" <<'PY'
import base64, hashlib, hmac, json, subprocess, sys, time
run = sys.argv[1]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
claims = {"iss": "https://issuer.bench.local", "aud": "bench-api", "sub": "bench-user",
          "iat": now, "exp": now + 86400}
def der_to_jose(der):
    # SEQUENCE { INTEGER r, INTEGER s }
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        n = der[i + 1]; v = der[i + 2:i + 2 + n].lstrip(b"\0"); out += v.rjust(32, b"\0"); i += 2 + n
    return out
for alg in ("rs256", "es256", "hs256"):
    header = {"alg": alg.upper(), "typ": "JWT"}
    msg = (b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())).encode()
    if alg == "hs256":
        sig = hmac.new(open(f"{run}/hs256.secret", "rb").read(), msg, hashlib.sha256).digest()
    else:
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{run}/{alg}.pem"],
                             input=msg, capture_output=True, check=True).stdout
        if alg == "es256":
            sig = der_to_jose(sig)
    open(f"{run}/{alg}.token", "w").write(msg.decode() + "." + b64(sig))
PY

# One API key, made the way operators make them; only its digest goes into the consumers file.
"$PORTCULLIS" keys new --consumer bench --write "$RUN_DIR/consumers.yaml" \
    >"$RUN_DIR/apikey.key" 2>/dev/null || die "portcullis keys new failed"

"$NGINX" -t -q -c "$RUN_DIR/origin.conf" -p "$RUN_DIR" >&2 || die "origin.conf is invalid"
"$NGINX" -t -q -c "$RUN_DIR/nginx-proxy.conf" -p "$RUN_DIR" >&2 || die "nginx-proxy.conf is invalid"
"$HAPROXY" -c -q -f "$RUN_DIR/haproxy.cfg" >&2 || die "haproxy.cfg is invalid"
"$PORTCULLIS" check -c "$RUN_DIR/portcullis.yaml" >&2 || die "portcullis.yaml is invalid"
"$PORTCULLIS" check -c "$RUN_DIR/portcullis-redis.yaml" >&2 || die "portcullis-redis.yaml is invalid"

# ---------------------------------------------------------------- starting
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in "${PORT[@]}" "$ADMIN_PORT"; do
    if port_open "$port"; then die "127.0.0.1:$port is already in use"; fi
done

start() { # name command...: runs it in the background, its output to the run dir
    local name=$1
    shift
    "$@" >"$RUN_DIR/$name.out" 2>&1 &
    PID[$name]=$!
}

wait_port() { # name port
    local deadline=$((SECONDS + 15))
    until port_open "$2"; do
        kill -0 "${PID[$1]}" 2>/dev/null || { cat "$RUN_DIR/$1.out" >&2; die "$1 exited"; }
        ((SECONDS < deadline)) || die "$1 not listening on 127.0.0.1:$2 after 15s"
        sleep 0.1
    done
}

start origin "$NGINX" -c "$RUN_DIR/origin.conf" -p "$RUN_DIR"
wait_port origin "${PORT[origin]}"
start nginx "$NGINX" -c "$RUN_DIR/nginx-proxy.conf" -p "$RUN_DIR"
start haproxy "$HAPROXY" -db -f "$RUN_DIR/haproxy.cfg"
start pingora-bare "$BARE" "127.0.0.1:${PORT[pingora-bare]}" "127.0.0.1:${PORT[origin]}" 1
start portcullis "$PORTCULLIS" run -c "$RUN_DIR/portcullis.yaml"
for name in nginx haproxy pingora-bare portcullis; do wait_port "$name" "${PORT[$name]}"; done
if [ -n "${PORT[redis]:-}" ]; then
    start redis "$(find_tool redis-server)" --port "${PORT[redis]}" --bind 127.0.0.1 --save "" --appendonly no
    wait_port redis "${PORT[redis]}"
    start portcullis-redis "$PORTCULLIS" run -c "$RUN_DIR/portcullis-redis.yaml"
    wait_port portcullis-redis "${PORT[portcullis-apikey-redis]}"
fi

for name in "${TARGETS[@]}"; do
    mapfile -t auth < <(auth_args "$name")
    body=$(curl -sS --max-time 5 -o - -w ' %{http_code}' "${auth[@]}" "$(url_of "$name")") \
        || die "$name: request failed"
    [ "$body" = $'ok\n 200' ] || die "$name answered '$body', expected 'ok' and 200"
done
log "all targets answer 200 ok; run dir $RUN_DIR"

# ---------------------------------------------------------------- measuring
# wrk's latency units to milliseconds.
to_ms() { awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n }'; }

declare -A RPS=() AVG=() P99=() CPU=() NON2XX=() SOCKERR=()
CLK_TCK=$(getconf CLK_TCK)

# The process and its children (nginx: master + worker); utime + stime in clock ticks.
tree_pids() { echo "$1"; pgrep -P "$1" || true; }
cpu_ticks() {
    local total=0 p t
    for p in $(tree_pids "$1"); do
        # Fields after "(comm) ": state is 1st, utime 12th, stime 13th.
        t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# wrk runs in the background and is waited for, so that a signal stops the test at once
# (bash runs a trap only once its foreground command has finished).
WRK_PID=
run_wrk() { # output-file wrk-arguments...
    local out=$1
    shift
    "$WRK" -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" "$@" >"$out" &
    WRK_PID=$!
    wait "$WRK_PID" || die "wrk failed: $*"
    WRK_PID=
}

measure() { # name round
    local name=$1 round=$2 out cpu0 cpu1 rps avg p99 reqs non2xx sockerr cpu_us
    out=$RUN_DIR/wrk-$name-$round.txt
    local auth
    mapfile -t auth < <(auth_args "$name")
    cpu0=$(cpu_ticks "${PID[$(proc_of "$name")]}")
    run_wrk "$out" -d"${DURATION}s" --timeout 5s --latency "${auth[@]}" "$(url_of "$name")"
    cpu1=$(cpu_ticks "${PID[$(proc_of "$name")]}")
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    avg=$(to_ms "$(awk '$1 == "Latency" && NF > 3 {print $2; exit}' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2; exit}' "$out")")
    reqs=$(awk '/requests in/ {print $1}' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    sockerr=$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$out")
    if [ -z "$rps" ] || [ -z "$reqs" ] || [ "$reqs" -eq 0 ]; then die "could not parse $out"; fi
    # CPU time (user + system) the target's own processes spent per request, in µs.
    cpu_us=$(awk -v t=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="$reqs" \
        'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    RPS[$name]+="$rps "
    AVG[$name]+="$avg "
    P99[$name]+="$p99 "
    CPU[$name]+="$cpu_us "
    NON2XX[$name]=$((${NON2XX[$name]:-0} + ${non2xx:-0}))
    SOCKERR[$name]=$((${SOCKERR[$name]:-0} + ${sockerr:-0}))
    log "round $round $name: $rps req/s, avg $avg ms, p99 $p99 ms, $cpu_us CPU µs/req," \
        "non-2xx ${non2xx:-0}, socket errors ${sockerr:-0}"
}

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) exit 1
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Resident memory of a process and its children (nginx: master + worker), in KiB.
rss_kib() {
    local pid=$1 total=0 p kb
    for p in $(tree_pids "$pid"); do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}
pss_kib() {
    local pid=$1 total=0 p kb
    for p in $(tree_pids "$pid"); do
        kb=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

# How busy the machine is with other work, over one second, before the test starts.
cpu_busy_pct() {
    local a b
    a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ")
        busy = y[1] - x[1]; idle = y[2] - x[2]
        printf "%.0f", (busy + idle > 0) ? 100 * busy / (busy + idle) : 0 }'
}
BUSY_BEFORE=$(cpu_busy_pct)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if [ "$BUSY_BEFORE" -gt 20 ]; then
    log "warning: the CPUs were ${BUSY_BEFORE}% busy with other work just before the test: numbers will be noisy"
fi

log "warm-up: ${WARMUP}s per target"
for name in "${TARGETS[@]}"; do
    mapfile -t auth < <(auth_args "$name")
    run_wrk /dev/null -d"${WARMUP}s" "${auth[@]}" "$(url_of "$name")"
done

n=${#TARGETS[@]}
for ((round = 1; round <= ROUNDS; round++)); do
    for ((i = 0; i < n; i++)); do
        # Rotate the order every round so that drift and position effects hit every target.
        measure "${TARGETS[$(((i + round - 1) % n))]}" "$round"
    done
done

declare -A RSS=() PSS=()
for name in "${TARGETS[@]}"; do
    pid=${PID[$(proc_of "$name")]}
    kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) died during the test"
    RSS[$name]=$(rss_kib "$pid")
    PSS[$name]=$(pss_kib "$pid")
done

# ---------------------------------------------------------------- the table
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

NGINX_RPS=$(median "${RPS[nginx]}")
{
    echo "wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${DURATION}s --latency, $ROUNDS round(s), median per target;" \
        "one worker per proxy; origin: nginx returning \"ok\" on 127.0.0.1:${PORT[origin]}."
    echo
    echo "| target | req/s | ratio to nginx | avg latency | p99 latency | RSS MiB | RSS ratio to nginx | PSS MiB | CPU µs/req | non-2xx / socket errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for name in "${TARGETS[@]}"; do
        rps=$(median "${RPS[$name]}")
        label=$name
        rss_ratio=$(ratio "${RSS[$name]}" "${RSS[nginx]}")
        if [ "$name" = origin ]; then label="origin (direct, no proxy)"; rss_ratio="-"; fi
        if [ "$name" = pingora-bare ]; then label="Pingora, bare (no hooks)"; fi
        printf '| %s | %.0f | %s | %.2f ms | %.2f ms | %s | %s | %s | %s | %d / %d |\n' \
            "$label" "$rps" "$(ratio "$rps" "$NGINX_RPS")" \
            "$(median "${AVG[$name]}")" "$(median "${P99[$name]}")" \
            "$(mib "${RSS[$name]}")" "$rss_ratio" "$(mib "${PSS[$name]}")" \
            "$(median "${CPU[$name]}")" "${NON2XX[$name]}" "${SOCKERR[$name]}"
    done
    echo
    echo "Per-round req/s (rounds in order; the target order rotates every round):"
    for name in "${TARGETS[@]}"; do echo "- $name: ${RPS[$name]% }"; done
    echo
    echo "- RSS / PSS: VmRSS / Pss of the process and its children (nginx: master + worker), read after the last round."
    echo "- CPU µs/req: user + system CPU time of the target's own processes during a measured run, divided by"
    echo "  the requests wrk completed (origin row: the origin alone; proxy rows: the proxy alone)."
    echo "- non-2xx / socket errors: summed over all rounds, from wrk's \"Non-2xx or 3xx responses\" and"
    echo "  \"Socket errors\" lines."
    echo "- Error-log lines during the test: origin $(grep -c . "$RUN_DIR/origin.error.log" || true)," \
        "nginx $(grep -c . "$RUN_DIR/nginx-proxy.error.log" || true), haproxy $(grep -c . "$RUN_DIR/haproxy.out" || true)," \
        "portcullis $(grep -c ERROR "$RUN_DIR/portcullis.out" || true) ERROR, of which" \
        "$(grep -c 'Downstream ConnectionClosed' "$RUN_DIR/portcullis.out" || true) 'Downstream ConnectionClosed'" \
        "(a client, here wrk at the end of a run, closed its connection before the answer)."
    if [ -n "${RPS[portcullis-introspection]:-}" ]; then
        calls=$(grep -c 'POST /introspect' "$RUN_DIR/introspection.access.log" || true)
        echo "- Introspection: $calls call(s) to the endpoint for 1 distinct token over every round" \
            "(expected exactly 1 per token per cache TTL of 5 min)."
    fi
    echo "- Other work on the machine: CPUs ${BUSY_BEFORE}% busy in the second before the test;" \
        "load average (1, 5, 15 min) before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)."
} | tee "$RUN_DIR/results.md"

log "raw outputs in $RUN_DIR"
