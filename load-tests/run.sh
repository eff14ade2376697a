#!/usr/bin/env bash
# Side-by-side load test on this machine, in one run: the origin directly, nginx, HAProxy,
# bare Pingora and Portcullis as plain reverse proxies in front of the same origin, one worker
# each, measured with wrk. Prints a markdown table with every target's throughput as a ratio to
# nginx's, and, for the TLS group (issue 7: TLS, mTLS, HMAC-signed POSTs), a second table with
# every TLS target as a ratio to Portcullis's pass-through over TLS measured with the same load
# generator (bare Pingora over TLS among them). Optionally a perf profile of each Portcullis and
# bare Pingora target (PROFILE=1) and the memory idle connections cost each proxy (MEMORY=N).
#
#   load-tests/run.sh                      # ROUNDS=3 DURATION=5
#   ROUNDS=5 DURATION=10 load-tests/run.sh
#   PROFILE=1 ONLY="portcullis pingora-bare" load-tests/run.sh     # + a perf profile of each
#   MEMORY=1000 MEMORY_ONLY=1 ONLY="nginx pingora-bare portcullis" load-tests/run.sh
#
# Environment:
#   ROUNDS          rounds; every round measures every target once, order rotated (default 3)
#   DURATION        seconds of each measured wrk run (default 5)
#   ONLY            space-separated targets to measure (default: all), e.g.
#                   ONLY="nginx portcullis portcullis-rs256" load-tests/run.sh
#   WARMUP          seconds of the unmeasured wrk run per target before round 1 (default 2)
#   WRK_THREADS     wrk -t (default 2)
#   WRK_CONNECTIONS wrk -c, and oha -c for the keep-alive TLS targets (default 64)
#   NEWCONN_CONNECTIONS  oha -c for the new-connection-per-request targets (default 8: what
#                   oha's client can resume; see below)
#   JWT=0, APIKEY=0, INTROSPECTION=0, TLS=0  leave those groups of targets out
#   PORTCULLIS_BIN  use this binary instead of building target/release/portcullis
#   OHA_BIN         the oha binary (default: oha on PATH or in ~/.cargo/bin, else
#                   `cargo install oha --locked --version $OHA_VERSION`); TLS group only
#   HMAC_SIGS       signatures generated before each measured HMAC run (default: twice the
#                   HMAC warm-up's rate times DURATION, at least 20000)
#   NO_INSTALL=1    never install anything; fail if wrk, nginx, haproxy, curl (or, with the
#                   TLS group, oha; with PROFILE=1, perf) is missing
#   PROFILE=1       after the measured rounds, one more load-generator run of DURATION seconds
#                   per Portcullis or bare Pingora target during which `perf record -F
#                   $PROFILE_FREQ --call-graph dwarf -p PID` records the target's process;
#                   `perf report` (flat, --no-children and --children, -g none) goes to
#                   $RUN_DIR/profile-<target>.txt. The measured rounds are over by then, so
#                   profiling does not touch their numbers. perf is Debian's linux-perf.
#   PROFILE_FREQ    perf's sampling frequency (default 999 Hz)
#   KEEP_PERF=1     keep the perf-<target>.data files (hundreds of MB; deleted by default)
#   MEMORY=N        connection memory (1 <= N <= 4000): for each selected nginx, haproxy,
#                   pingora-bare, portcullis and TLS variant (nginx-tls, pingora-bare-tls,
#                   portcullis-tls), the process's VmRSS and Pss at baseline, with N idle
#                   keep-alive connections open (each after one completed request), after
#                   they close and a few short requests, and for a second wave of N (memory
#                   reused, not grown); idle_connections.py --port --pid does the reading.
#                   A table of it follows the others. Raises the open-files limit to N + 1024.
#   MEMORY_ONLY=1   with MEMORY=N: no warm-up, no throughput rounds, no profiles, no session-
#                   resumption checks; only the memory table, of processes that served only
#                   the check requests (after the rounds, the allocator holds pages the load
#                   generator's connections freed, and a wave's first connections reuse them)
#
# Everything runs on 127.0.0.1. Every process started here is stopped on exit. Raw wrk outputs,
# logs and the table are kept in load-tests/out/<timestamp>/ (gitignored).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-64}
# oha's connections in the new-connection-per-request targets. oha's TLS client (rustls) keeps
# at most 8 TLS 1.3 session tickets per server and uses each once: with more concurrent
# handshakes than that, most find no ticket and make a full handshake (seen in a capture: 40 %
# resumed at 64 connections, all but the first 8 at 8).
NEWCONN_CONNECTIONS=${NEWCONN_CONNECTIONS:-8}
# The gRPC rows: h2c connections, and calls in flight on each (8 × 8: as many as wrk's 64).
GRPC_CONNECTIONS=${GRPC_CONNECTIONS:-8}
GRPC_STREAMS=${GRPC_STREAMS:-8}

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
declare -A PROC=() URLPATH=() TOKEN_ALG=() LOADER=()
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
# Policies (POLICY=0 leaves these out): the same cached RS256 token (with roles: [admin]) on a
# route that needs the admin role, and on one whose Rego policy decides instead: the seed's
# policy, conf/rego/authz.rego ("/admin/... needs the admin role"), evaluated in-process. The
# -distinct rows send every request to a path of its own (LOADER distinct: wrk with
# distinct.lua), so the Rego route evaluates each one: its decision memo (the same request in
# the same second) never helps.
if [ "${POLICY:-1}" = 1 ]; then
    TARGETS+=(portcullis-role portcullis-rego portcullis-role-distinct portcullis-rego-distinct)
    for t in portcullis-role portcullis-rego portcullis-role-distinct portcullis-rego-distinct; do
        PROC[$t]=portcullis
        PORT[$t]=18089
        TOKEN_ALG[$t]=rs256-admin
    done
    URLPATH[portcullis-role]=/admin/role
    URLPATH[portcullis-rego]=/admin/rego
    URLPATH[portcullis-role-distinct]=/admin/role
    URLPATH[portcullis-rego-distinct]=/admin/rego
    LOADER[portcullis-role-distinct]=distinct
    LOADER[portcullis-rego-distinct]=distinct
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
# TLS, mTLS and HMAC-signed requests (issue 7; TLS=0 leaves these out). A second Portcullis
# (peers/portcullis-tls.yaml) has a TLS listener on 18443 and an mTLS one on 18444 (client
# certificate required, session resumption on); a second nginx (peers/nginx-tls.conf)
# terminates TLS on 18446 and mTLS on 18447. Certificates (a CA, the server's for 127.0.0.1,
# a client's with the URI SAN spiffe://bench/client) are made by the run.
# pingora-bare-tls: bare Pingora (bare_pingora.rs --tls) with a TLS listener of Pingora's own
# on 18448 (TlsSettings::intermediate, HTTP/2 offered by ALPN), the same certificate, key and
# origin as the TLS Portcullis, in a process of its own, measured with wrk like portcullis-tls.
# What differs besides the hooks: Pingora's listener keeps its default buffers (a 64 KiB read
# buffer per connection, where portcullis-tls.yaml's listener has read_buffer_size's default,
# none, and OpenSSL reads ahead), and Pingora runs the handshake itself (Portcullis under its own deadline,
# with renegotiation off).
# LOADER: wrk (GET), post (wrk POSTing a 1 KiB body, post.lua), hmac (the same, each request
# signed once with a signature made by `portcullis sign` just before the run), oha (wrk cannot
# present a client certificate; oha can), oha-newconn (oha --disable-keepalive with
# NEWCONN_CONNECTIONS connections: a new TCP connection and TLS handshake per request, resumed
# with a ticket from an earlier one).
# BASE: the row a target's ratio is taken to in the TLS table: pass-through over TLS with the
# same load generator and connection mode.
declare -A SCHEME=() CLIENT_CERT=() BASE=()
if [ "${TLS:-1}" = 1 ]; then
    TARGETS+=(nginx-tls portcullis-tls pingora-bare-tls portcullis-post-tls portcullis-hmac
        portcullis-tls-oha portcullis-mtls nginx-mtls
        portcullis-tls-newconn nginx-tls-newconn portcullis-mtls-newconn nginx-mtls-newconn)
    for t in nginx-tls portcullis-tls pingora-bare-tls portcullis-post-tls portcullis-hmac portcullis-tls-oha \
        portcullis-mtls nginx-mtls portcullis-tls-newconn nginx-tls-newconn portcullis-mtls-newconn \
        nginx-mtls-newconn; do
        SCHEME[$t]=https
        case $t in
            nginx-*) PROC[$t]=nginx-tls ;;
            pingora-bare-tls) PROC[$t]=pingora-bare-tls ;;
            *) PROC[$t]=portcullis-tls ;;
        esac
    done
    PORT[pingora-bare-tls]=18448
    PORT[nginx-tls]=18446
    PORT[nginx-tls-newconn]=18446
    PORT[nginx-mtls]=18447
    PORT[nginx-mtls-newconn]=18447
    for t in portcullis-tls portcullis-post-tls portcullis-hmac portcullis-tls-oha portcullis-tls-newconn; do
        PORT[$t]=18443
    done
    PORT[portcullis-mtls]=18444
    PORT[portcullis-mtls-newconn]=18444
    URLPATH[portcullis-post-tls]=/post
    URLPATH[portcullis-hmac]=/hmac
    URLPATH[portcullis-mtls]=/mtls
    URLPATH[portcullis-mtls-newconn]=/mtls
    LOADER[portcullis-post-tls]=post
    LOADER[portcullis-hmac]=hmac
    for t in portcullis-tls-oha portcullis-mtls nginx-mtls; do LOADER[$t]=oha; done
    for t in portcullis-tls-newconn nginx-tls-newconn portcullis-mtls-newconn nginx-mtls-newconn; do
        LOADER[$t]=oha-newconn
    done
    for t in portcullis-mtls nginx-mtls portcullis-mtls-newconn nginx-mtls-newconn; do CLIENT_CERT[$t]=1; done
    for t in nginx-tls portcullis-tls pingora-bare-tls portcullis-post-tls portcullis-hmac; do BASE[$t]=portcullis-tls; done
    for t in portcullis-tls-oha portcullis-mtls nginx-mtls; do BASE[$t]=portcullis-tls-oha; done
    for t in portcullis-tls-newconn nginx-tls-newconn portcullis-mtls-newconn nginx-mtls-newconn; do
        BASE[$t]=portcullis-tls-newconn
    done
fi
# WebSocket, gRPC and CORS preflights (issue 17; STREAMS=0 leaves these out), each beside nginx
# doing the same: round trips of a 64-byte message on upgraded WebSocket connections (nginx:
# proxy_pass with Upgrade), gRPC unary calls of a 64-byte message over h2c (nginx: grpc_pass on a
# `listen http2` server of its own, 18093), and a browser's CORS preflight, answered by the proxy
# itself (nginx: `if ($request_method = OPTIONS) { add_header ...; return 204; }`). The origins
# and the WebSocket and gRPC load generators are load-tests/streams.rs (ws-origin on 18092,
# grpc-origin on 18094); the preflights are wrk with preflight.lua.
if [ "${STREAMS:-1}" = 1 ]; then
    TARGETS+=(nginx-ws portcullis-ws nginx-grpc portcullis-grpc nginx-preflight portcullis-preflight)
    for kind in ws grpc preflight; do
        PROC[nginx-$kind]=nginx
        PROC[portcullis-$kind]=portcullis
        PORT[nginx-$kind]=18081
        PORT[portcullis-$kind]=18089
        LOADER[nginx-$kind]=$kind
        LOADER[portcullis-$kind]=$kind
    done
    PORT[nginx-grpc]=18093
    for t in nginx-ws portcullis-ws; do URLPATH[$t]=/ws; done
    for t in nginx-grpc portcullis-grpc; do URLPATH[$t]=/bench.Echo/Call; done
    for t in nginx-preflight portcullis-preflight; do URLPATH[$t]=/cors; done
    PORT[ws-origin]=18092
    PORT[grpc-origin]=18094
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
url_of() { echo "${SCHEME[$1]:-http}://127.0.0.1:${PORT[$1]}${URLPATH[$1]:-/}"; }
loader_of() { echo "${LOADER[$1]:-wrk}"; }
selected() { case " ${TARGETS[*]} " in *" $1 "*) return 0 ;; esac; return 1; }
# Whether any selected target needs oha / the TLS processes.
NEED_OHA=0
NEED_TLS=0
NEED_STREAMS=0
for t in "${TARGETS[@]}"; do
    case $(loader_of "$t") in oha*) NEED_OHA=1 ;; ws | grpc) NEED_STREAMS=1 ;; esac
    if [ -n "${SCHEME[$t]:-}" ]; then NEED_TLS=1; fi
done
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

log() { printf '[run.sh %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

PROFILE=${PROFILE:-0}
PROFILE_FREQ=${PROFILE_FREQ:-999}
MEMORY=${MEMORY:-0}
MEMORY_ONLY=${MEMORY_ONLY:-0}
# PROFILE=1: the targets whose process is a Portcullis or a bare Pingora, profiled with perf.
PROFILE_TARGETS=()
if [ "$PROFILE" = 1 ] && [ "$MEMORY_ONLY" != 1 ]; then
    for t in "${TARGETS[@]}"; do
        case $(proc_of "$t") in portcullis* | pingora-bare*) PROFILE_TARGETS+=("$t") ;; esac
    done
    [ ${#PROFILE_TARGETS[@]} -gt 0 ] || log "PROFILE=1: no Portcullis or bare Pingora target selected, nothing to profile"
fi
# MEMORY=N: the proxies whose connection memory is read. At most 4000 connections: nginx's
# worker_connections is 4096 (peers/*.conf), the origin pool's connections included.
MEMORY_TARGETS=()
case $MEMORY in '' | *[!0-9]*) die "MEMORY must be a number of connections (MEMORY=$MEMORY)" ;; esac
if [ "$MEMORY" != 0 ]; then
    { [ "$MEMORY" -ge 1 ] && [ "$MEMORY" -le 4000 ]; } || die "MEMORY must be between 1 and 4000 (MEMORY=$MEMORY)"
    for t in nginx haproxy pingora-bare portcullis nginx-tls pingora-bare-tls portcullis-tls; do
        if selected "$t"; then MEMORY_TARGETS+=("$t"); fi
    done
    [ ${#MEMORY_TARGETS[@]} -gt 0 ] ||
        die "MEMORY=N reads nginx, haproxy, pingora-bare, portcullis and their -tls variants: none is selected"
fi
[ "$MEMORY_ONLY" != 1 ] || [ "$MEMORY" != 0 ] || die "MEMORY_ONLY=1 needs MEMORY=N"

# ---------------------------------------------------------------- stopping what we started
stop_all() {
    local name pid deadline
    if [ -n "${LOADER_PID:-}" ]; then kill -TERM "$LOADER_PID" 2>/dev/null || true; fi
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
    # tcpdump: the check that oha's new connections really resume their TLS sessions (skipped,
    # not fatal, when it is missing and NO_INSTALL=1).
    if [ "$NEED_TLS" = 1 ] && [ "${NO_INSTALL:-0}" != 1 ]; then
        [ -n "$(find_tool tcpdump)" ] || missing+=(tcpdump)
    fi
    if [ ${#PROFILE_TARGETS[@]} -gt 0 ]; then [ -n "$(find_tool perf)" ] || missing+=(linux-perf); fi
    if [ ${#missing[@]} -gt 0 ]; then
        [ "${NO_INSTALL:-0}" = 1 ] && die "missing: ${missing[*]} (NO_INSTALL=1)"
        log "installing ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    fi
    # oha (the load generator that presents a client certificate) is a crates.io package, not
    # a Debian one: built once into ~/.cargo/bin (about 10 minutes on 2 cores).
    if [ "$NEED_OHA" = 1 ] && [ -z "${OHA_BIN:-}" ] && [ -z "$(find_tool oha "$HOME/.cargo/bin")" ]; then
        [ "${NO_INSTALL:-0}" = 1 ] && die "missing: oha (NO_INSTALL=1; cargo install oha --locked)"
        log "installing oha $OHA_VERSION with cargo install (a one-off build of several minutes)"
        cargo install oha --locked --version "$OHA_VERSION" --quiet >&2
    fi
    return 0
}

OHA_VERSION=${OHA_VERSION:-1.16.0}
install_missing
WRK=$(find_tool wrk)
NGINX=$(find_tool nginx)
HAPROXY=$(find_tool haproxy)
if [ -z "$WRK" ] || [ -z "$NGINX" ] || [ -z "$HAPROXY" ]; then die "wrk, nginx or haproxy not found"; fi
OHA=
if [ "$NEED_OHA" = 1 ]; then
    OHA=${OHA_BIN:-$(find_tool oha "$HOME/.cargo/bin")}
    [ -x "$OHA" ] || die "oha not found"
fi
TCPDUMP=$(find_tool tcpdump)
PERF=$(find_tool perf)
# Whether perf may record here (said before the rounds; each profile says so again if not).
perf_permissions() {
    local level
    level=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo '?')
    echo "kernel.perf_event_paranoid $level, uid $(id -u): root (or CAP_PERFMON) may record any process;" \
        "others their own processes, with kernel samples at level 1 or less, user space only at 2," \
        "not at all above 2 (Debian's 3); \`sysctl kernel.perf_event_paranoid=1\` as root allows it"
}
if [ ${#PROFILE_TARGETS[@]} -gt 0 ]; then
    paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo 0)
    if [ "$(id -u)" -ne 0 ] && [ "$paranoid" -gt 1 ]; then
        log "PROFILE=1: $(perf_permissions)"
    fi
fi

if [ -n "${PORTCULLIS_BIN:-}" ]; then
    PORTCULLIS=$PORTCULLIS_BIN
else
    log "cargo build --release (a no-op when up to date)"
    (cd "$ROOT" && cargo build --release --quiet --bin portcullis --example bare_pingora --example streams) >&2
    PORTCULLIS=$ROOT/target/release/portcullis
fi
STREAMS_BIN=${STREAMS_BIN:-$ROOT/target/release/examples/streams}
[ "$NEED_STREAMS" = 0 ] || [ -x "$STREAMS_BIN" ] || die "no streams binary at $STREAMS_BIN (cargo build --release --example streams)"
# The floor: Pingora with no hooks but upstream_peer (load-tests/bare_pingora.rs).
BARE=${BARE_PINGORA_BIN:-$ROOT/target/release/examples/bare_pingora}
[ -x "$PORTCULLIS" ] || die "no portcullis binary at $PORTCULLIS"
[ -x "$BARE" ] || die "no bare_pingora binary at $BARE (cargo build --release --example bare_pingora)"

# ---------------------------------------------------------------- configs
for f in origin.conf nginx-proxy.conf haproxy.cfg portcullis.yaml portcullis-redis.yaml \
    nginx-tls.conf portcullis-tls.yaml; do
    sed "s|@RUN_DIR@|$RUN_DIR|g; s|@ROOT@|$ROOT|g" "$PEERS/$f" >"$RUN_DIR/$f"
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
# The policy rows' token: RS256 with roles.
msg = (b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()) + "."
       + b64(json.dumps(dict(claims, roles=["admin"])).encode())).encode()
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{run}/rs256.pem"],
                     input=msg, capture_output=True, check=True).stdout
open(f"{run}/rs256-admin.token", "w").write(msg.decode() + "." + b64(sig))
PY

# One API key, made the way operators make them; only its digest goes into the consumers file.
"$PORTCULLIS" keys new --consumer bench --write "$RUN_DIR/consumers.yaml" \
    >"$RUN_DIR/apikey.key" 2>/dev/null || die "portcullis keys new failed"

if [ "$NEED_TLS" = 1 ]; then
    # Certificates for the TLS group, all ECDSA P-256: a CA; the server's for 127.0.0.1 and
    # localhost (serverAuth); a client's whose one URI SAN names it (clientAuth), which
    # Portcullis's `client_certificates.identity: san_uri` reads.
    ec_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    issue() { # name subject extensions
        ec_key "$RUN_DIR/$1.key"
        openssl req -new -key "$RUN_DIR/$1.key" -subj "$2" 2>/dev/null |
            openssl x509 -req -CA "$RUN_DIR/ca.pem" -CAkey "$RUN_DIR/ca.key" -set_serial "0x$(openssl rand -hex 8)" \
                -days 3 -out "$RUN_DIR/$1.pem" -extfile <(printf '%s\n' "$3" | tr ';' '\n') 2>/dev/null
    }
    ec_key "$RUN_DIR/ca.key"
    openssl req -x509 -new -key "$RUN_DIR/ca.key" -out "$RUN_DIR/ca.pem" -days 3 \
        -subj "/CN=Portcullis bench CA" -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    issue server "/CN=localhost" "basicConstraints=critical,CA:FALSE;keyUsage=critical,digitalSignature;extendedKeyUsage=serverAuth;subjectAltName=IP:127.0.0.1,DNS:localhost"
    issue client "/CN=bench client" "basicConstraints=critical,CA:FALSE;keyUsage=critical,digitalSignature;extendedKeyUsage=clientAuth;subjectAltName=URI:spiffe://bench/client"
    openssl verify -CAfile "$RUN_DIR/ca.pem" "$RUN_DIR/server.pem" "$RUN_DIR/client.pem" >/dev/null ||
        die "the certificates made for the TLS group do not verify"
    # The HMAC key (48 random bytes) and the 1 KiB body every POST sends (printable bytes).
    printf 'keys:\n- id: bench-key\n  consumer: bench\n  secret: "base64:%s"\n  created: %s\n' \
        "$(openssl rand -base64 48 | tr -d '\n')" "$(date -u +%F)" >"$RUN_DIR/signing-keys.yaml"
    head -c 768 /dev/urandom | base64 -w0 >"$RUN_DIR/body.bin"
    [ "$(wc -c <"$RUN_DIR/body.bin")" -eq 1024 ] || die "body.bin is not 1024 bytes"
    "$NGINX" -t -q -c "$RUN_DIR/nginx-tls.conf" -p "$RUN_DIR" >&2 || die "nginx-tls.conf is invalid"
    "$PORTCULLIS" check -c "$RUN_DIR/portcullis-tls.yaml" >&2 || die "portcullis-tls.yaml is invalid"
fi

"$NGINX" -t -q -c "$RUN_DIR/origin.conf" -p "$RUN_DIR" >&2 || die "origin.conf is invalid"
"$NGINX" -t -q -c "$RUN_DIR/nginx-proxy.conf" -p "$RUN_DIR" >&2 || die "nginx-proxy.conf is invalid"
"$HAPROXY" -c -q -f "$RUN_DIR/haproxy.cfg" >&2 || die "haproxy.cfg is invalid"
"$PORTCULLIS" check -c "$RUN_DIR/portcullis.yaml" >&2 || die "portcullis.yaml is invalid"
"$PORTCULLIS" check -c "$RUN_DIR/portcullis-redis.yaml" >&2 || die "portcullis-redis.yaml is invalid"

# ---------------------------------------------------------------- starting
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Each Portcullis has an admin listener of its own: a shared port would leave one of them
# retrying its bind, and its metrics read from the other process.
TLS_ADMIN_PORT=19902
REDIS_ADMIN_PORT=19903
for port in "${PORT[@]}" "$ADMIN_PORT" "$TLS_ADMIN_PORT" "$REDIS_ADMIN_PORT"; do
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

# MEMORY=N: every server started below (they inherit it) and the connections' client hold N
# sockets or more each.
if [ "$MEMORY" != 0 ]; then
    nofile=$((MEMORY + 1024))
    if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$nofile" ]; then
        ulimit -Sn "$nofile" 2>/dev/null ||
            die "MEMORY=$MEMORY needs $nofile open files; the hard limit is $(ulimit -Hn)"
    fi
    log "open-files limit $(ulimit -Sn) (MEMORY=$MEMORY)"
fi
start origin "$NGINX" -c "$RUN_DIR/origin.conf" -p "$RUN_DIR"
wait_port origin "${PORT[origin]}"
start nginx "$NGINX" -c "$RUN_DIR/nginx-proxy.conf" -p "$RUN_DIR"
start haproxy "$HAPROXY" -db -f "$RUN_DIR/haproxy.cfg"
start pingora-bare "$BARE" "127.0.0.1:${PORT[pingora-bare]}" "127.0.0.1:${PORT[origin]}" 1
start portcullis "$PORTCULLIS" run -c "$RUN_DIR/portcullis.yaml"
for name in nginx haproxy pingora-bare portcullis; do wait_port "$name" "${PORT[$name]}"; done
if [ "$NEED_STREAMS" = 1 ]; then
    start ws-origin "$STREAMS_BIN" ws-origin "127.0.0.1:${PORT[ws-origin]}"
    start grpc-origin "$STREAMS_BIN" grpc-origin "127.0.0.1:${PORT[grpc-origin]}"
    wait_port ws-origin "${PORT[ws-origin]}"
    wait_port grpc-origin "${PORT[grpc-origin]}"
    wait_port nginx "${PORT[nginx-grpc]}"
fi
if [ -n "${PORT[redis]:-}" ]; then
    start redis "$(find_tool redis-server)" --port "${PORT[redis]}" --bind 127.0.0.1 --save "" --appendonly no
    wait_port redis "${PORT[redis]}"
    start portcullis-redis "$PORTCULLIS" run -c "$RUN_DIR/portcullis-redis.yaml"
    wait_port portcullis-redis "${PORT[portcullis-apikey-redis]}"
    wait_port portcullis-redis "$REDIS_ADMIN_PORT"
fi
if [ "$NEED_TLS" = 1 ]; then
    start nginx-tls "$NGINX" -c "$RUN_DIR/nginx-tls.conf" -p "$RUN_DIR"
    start portcullis-tls "$PORTCULLIS" run -c "$RUN_DIR/portcullis-tls.yaml"
    # Bare Pingora over TLS: no plain listener, the TLS Portcullis's certificate and key.
    start pingora-bare-tls "$BARE" - "127.0.0.1:${PORT[origin]}" 1 \
        --tls "127.0.0.1:${PORT[pingora-bare-tls]}" "$RUN_DIR/server.pem" "$RUN_DIR/server.key"
    for port in 18446 18447; do wait_port nginx-tls "$port"; done
    for port in 18443 18444 "$TLS_ADMIN_PORT"; do wait_port portcullis-tls "$port"; done
    wait_port pingora-bare-tls "${PORT[pingora-bare-tls]}"
fi

# curl's arguments for one check request to the target (TLS, client certificate, body and,
# for the HMAC target, one fresh signature).
curl_args() {
    auth_args "$1"
    if [ -n "${SCHEME[$1]:-}" ]; then printf '%s\n' --cacert "$RUN_DIR/ca.pem"; fi
    if [ -n "${CLIENT_CERT[$1]:-}" ]; then
        printf '%s\n' --cert "$RUN_DIR/client.pem" --key "$RUN_DIR/client.key"
    fi
    case $(loader_of "$1") in
        post | hmac)
            printf '%s\n' -X POST --data-binary "@$RUN_DIR/body.bin" -H "Content-Type: application/octet-stream"
            ;;
    esac
    if [ "$(loader_of "$1")" = hmac ]; then
        "$PORTCULLIS" sign --keys-file "$RUN_DIR/signing-keys.yaml" --key-id bench-key -X POST \
            --body-file "$RUN_DIR/body.bin" "$(url_of "$1")" | while IFS= read -r h; do printf '%s\n' -H "$h"; done
    fi
    return 0
}

# A streaming target's check: one connection's worth of its own load for a second, all of it
# answered right; a preflight's: 204 with the allowed origin.
check_stream() { # name
    local out=$RUN_DIR/check-$1.json
    local -a cmd=("$STREAMS_BIN" grpc-load "$(url_of "$1")" 1 1 1)
    if [ "$(loader_of "$1")" = ws ]; then cmd=("$STREAMS_BIN" ws-load "ws://127.0.0.1:${PORT[$1]}${URLPATH[$1]}" 1 1); fi
    "${cmd[@]}" >"$out" 2>&1 || die "$1: the check run failed (see $out)"
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(0 if d["requests"] > 0 and d["errors"] == 0 else 1)' "$out" ||
        die "$1: the check run was not all right: $(cat "$out")"
}
check_preflight() { # name
    local head
    head=$(curl -sS --max-time 5 -o /dev/null -D - -X OPTIONS -H "Origin: https://app.bench.local" \
        -H "Access-Control-Request-Method: POST" -H "Access-Control-Request-Headers: authorization, content-type" \
        "$(url_of "$1")") || die "$1: preflight failed"
    grep -q '^HTTP/1.1 204' <<<"$head" && grep -qi '^access-control-allow-origin: https://app.bench.local' <<<"$head" ||
        die "$1 answered the preflight with: $head"
}
for name in "${TARGETS[@]}"; do
    case $(loader_of "$name") in
        ws | grpc) check_stream "$name"; continue ;;
        preflight) check_preflight "$name"; continue ;;
    esac
    mapfile -t args < <(curl_args "$name")
    body=$(curl -sS --max-time 5 -o - -w ' %{http_code}' "${args[@]}" "$(url_of "$name")") \
        || die "$name: request failed"
    [ "$body" = $'ok\n 200' ] || die "$name answered '$body', expected 'ok' and 200"
done
log "all targets answer 200 ok; run dir $RUN_DIR"

# Session resumption on the TLS and mTLS listeners, checked two ways before the measurements:
# openssl s_client saves the session of one connection and offers it on a second (it prints
# "New" or "Reused"); and a capture of 1000 requests made by oha on new connections exactly as
# the -newconn targets make them counts the handshakes whose ServerHello accepted the session
# the client offered (tls_resumed.py; TLS 1.3 hellos are in clear).
RESUMPTION=()
check_resumption() { # label port path
    local label=$1 port=$2 path=$3 req first second pcap tpid deadline summary codes size
    local -a tls=(-CAfile "$RUN_DIR/ca.pem" -cert "$RUN_DIR/client.pem" -key "$RUN_DIR/client.key")
    req=$(printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$path" "$port")
    # (The request, then a second for the answer and the session tickets to arrive; s_client
    # stops at the end of its input.)
    first=$( (printf '%s' "$req"; sleep 1) | timeout 10 openssl s_client -connect "127.0.0.1:$port" "${tls[@]}" \
        -sess_out "$RUN_DIR/session-$port.pem" 2>/dev/null | grep -m1 -E '^(New|Reused),' || true)
    second=$( (printf '%s' "$req"; sleep 1) | timeout 10 openssl s_client -connect "127.0.0.1:$port" "${tls[@]}" \
        -sess_in "$RUN_DIR/session-$port.pem" 2>/dev/null | grep -m1 -E '^(New|Reused),' || true)
    summary="openssl s_client: first connection \"${first:-no answer}\", second with its session \"${second:-no answer}\""
    if [ -n "$TCPDUMP" ] && [ -n "$OHA" ]; then
        pcap=$RUN_DIR/handshakes-$port.pcap
        "$TCPDUMP" -i lo -B 65536 -s 1500 -U -w "$pcap" "tcp port $port" 2>"$pcap.log" &
        tpid=$!
        PID[tcpdump]=$tpid
        deadline=$((SECONDS + 5))
        until grep -q 'listening on' "$pcap.log" 2>/dev/null || ((SECONDS >= deadline)); do sleep 0.1; done
        timeout 60 "$OHA" --no-tui -n 1000 -c "$NEWCONN_CONNECTIONS" --disable-keepalive --output-format json \
            --cacert "$RUN_DIR/ca.pem" --cert "$RUN_DIR/client.pem" --key "$RUN_DIR/client.key" \
            "https://127.0.0.1:$port$path" >"$RUN_DIR/handshakes-$port.json" 2>&1 || true
        # tcpdump lags behind on a busy loopback: stop it only once the capture stopped growing.
        size=-1
        deadline=$((SECONDS + 15))
        while [ "$(stat -c %s "$pcap" 2>/dev/null || echo 0)" != "$size" ] && ((SECONDS < deadline)); do
            size=$(stat -c %s "$pcap" 2>/dev/null || echo 0)
            sleep 1
        done
        kill -TERM "$tpid" 2>/dev/null || true
        wait "$tpid" 2>/dev/null || true
        unset 'PID[tcpdump]'
        codes=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("statusCodeDistribution"))' \
            "$RUN_DIR/handshakes-$port.json" 2>/dev/null || echo "?")
        summary+="; oha -n 1000 -c $NEWCONN_CONNECTIONS --disable-keepalive (status codes $codes), captured: $(python3 "$HERE/tls_resumed.py" "$pcap" "$port" 2>&1 || echo "no capture (see $pcap.log)")"
    else
        summary+="; no capture (tcpdump or oha missing)"
    fi
    RESUMPTION+=("$label: $summary")
    log "session resumption, $label: $summary"
}
if [ "$NEED_TLS" = 1 ] && [ "$MEMORY_ONLY" != 1 ]; then
    check_resumption "Portcullis mTLS, 127.0.0.1:18444" 18444 /mtls
    check_resumption "Portcullis TLS, 127.0.0.1:18443" 18443 /
    check_resumption "nginx TLS, 127.0.0.1:18446" 18446 /
    check_resumption "nginx mTLS, 127.0.0.1:18447" 18447 /
fi

# ---------------------------------------------------------------- measuring
# wrk's latency units to milliseconds.
to_ms() { awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n }'; }

declare -A RPS=() AVG=() P99=() CPU=() NON2XX=() SOCKERR=() OTHER=() UNSIGNED=() SIGNED=()
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)

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
# CPU ticks of the processes a target needs besides itself: the origin (and Redis).
helper_ticks() {
    local total=0
    if [ "$1" != origin ]; then total=$(cpu_ticks "${PID[origin]}"); fi
    if [ "$(proc_of "$1")" = portcullis-redis ]; then total=$((total + $(cpu_ticks "${PID[redis]}"))); fi
    case $(loader_of "$1") in
        ws) total=$((total + $(cpu_ticks "${PID[ws-origin]}"))) ;;
        grpc) total=$((total + $(cpu_ticks "${PID[grpc-origin]}"))) ;;
    esac
    echo "$total"
}
# user + nice + system + irq + softirq ticks of all CPUs together (a process's stime includes
# the loopback softirq work done in its context, so the interrupt columns belong on this side).
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }

# The load generator (wrk or oha) runs in the background and is waited for, so that a signal
# stops the test at once (bash runs a trap only once its foreground command has finished).
# `times` before and after it gives the CPU time the load generator used (LOADER_TICKS).
LOADER_PID=
LOADER_TICKS=0
children_ticks() { # a file `times` wrote: its second line is the children's user and system time
    awk -v hz="$CLK_TCK" 'NR == 2 { t = 0
        for (i = 1; i <= 2; i++) { v = $i; m = v; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", v); sub(/s$/, "", v); t += m * 60 + v }
        printf "%d", t * hz }' "$1"
}
run_loader() { # output-file command...
    local out=$1
    shift
    times >"$RUN_DIR/times.before"
    "$@" >"$out" 2>"$out.stderr" &
    LOADER_PID=$!
    wait "$LOADER_PID" || die "the load generator failed: $* (see $out.stderr)"
    LOADER_PID=
    times >"$RUN_DIR/times.after"
    LOADER_TICKS=$(($(children_ticks "$RUN_DIR/times.after") - $(children_ticks "$RUN_DIR/times.before")))
}

# The load generator's command for a target, into LOAD_CMD.
load_cmd() { # name seconds
    local name=$1 secs=$2 url
    local -a auth
    url=$(url_of "$name")
    case $(loader_of "$name") in
        wrk)
            mapfile -t auth < <(auth_args "$name")
            LOAD_CMD=("$WRK" -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${secs}s" --timeout 5s --latency
                "${auth[@]}" "$url")
            ;;
        post)
            LOAD_CMD=("$WRK" -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${secs}s" --timeout 5s --latency
                -s "$HERE/post.lua" "$url" -- "$RUN_DIR/body.bin")
            ;;
        hmac)
            LOAD_CMD=("$WRK" -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${secs}s" --timeout 5s --latency
                -s "$HERE/post.lua" "$url" -- "$RUN_DIR/body.bin" "$RUN_DIR/signatures")
            ;;
        oha | oha-newconn)
            LOAD_CMD=("$OHA" --no-tui -z "${secs}s" -t 5s --output-format json --cacert "$RUN_DIR/ca.pem")
            if [ -n "${CLIENT_CERT[$name]:-}" ]; then
                LOAD_CMD+=(--cert "$RUN_DIR/client.pem" --key "$RUN_DIR/client.key")
            fi
            if [ "$(loader_of "$name")" = oha-newconn ]; then
                LOAD_CMD+=(-c "$NEWCONN_CONNECTIONS" --disable-keepalive)
            else
                LOAD_CMD+=(-c "$WRK_CONNECTIONS")
            fi
            LOAD_CMD+=("$url")
            ;;
        ws)
            LOAD_CMD=("$STREAMS_BIN" ws-load "ws://127.0.0.1:${PORT[$name]}${URLPATH[$name]}" "$WRK_CONNECTIONS" "$secs")
            ;;
        grpc)
            LOAD_CMD=("$STREAMS_BIN" grpc-load "$url" "$GRPC_CONNECTIONS" "$GRPC_STREAMS" "$secs")
            ;;
        preflight)
            LOAD_CMD=("$WRK" -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${secs}s" --timeout 5s --latency
                -s "$HERE/preflight.lua" "$url")
            ;;
        distinct)
            mapfile -t auth < <(auth_args "$name")
            LOAD_CMD=("$WRK" -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${secs}s" --timeout 5s --latency
                "${auth[@]}" -s "$HERE/distinct.lua" "$url")
            ;;
        *) die "unknown load generator for $name" ;;
    esac
}

# How a target is loaded, for the tables.
loader_label() {
    case $(loader_of "$1") in
        wrk) echo "wrk -t$WRK_THREADS -c$WRK_CONNECTIONS" ;;
        post | hmac) echo "wrk -t$WRK_THREADS -c$WRK_CONNECTIONS, post.lua" ;;
        oha) echo "oha -c$WRK_CONNECTIONS" ;;
        oha-newconn) echo "oha -c$NEWCONN_CONNECTIONS --disable-keepalive" ;;
        ws) echo "streams ws-load, $WRK_CONNECTIONS connections" ;;
        grpc) echo "streams grpc-load, $GRPC_CONNECTIONS connections × $GRPC_STREAMS calls" ;;
        preflight) echo "wrk -t$WRK_THREADS -c$WRK_CONNECTIONS, preflight.lua" ;;
        distinct) echo "wrk -t$WRK_THREADS -c$WRK_CONNECTIONS, distinct.lua" ;;
    esac
}

# Signatures for the HMAC target, made just before each of its runs (their `created` is then
# seconds old, well inside the ±300 s window) and split into one file per wrk thread
# ($RUN_DIR/signatures.0, .1, ...), so that no nonce is ever sent twice.
SIGN_LOG=()
make_signatures() { # count
    local t0 t1 ms
    rm -f "$RUN_DIR"/signatures "$RUN_DIR"/signatures.*
    t0=$(date +%s%N)
    "$PORTCULLIS" sign --keys-file "$RUN_DIR/signing-keys.yaml" --key-id bench-key -X POST \
        --body-file "$RUN_DIR/body.bin" --count "$1" "$(url_of portcullis-hmac)" >"$RUN_DIR/signatures" ||
        die "portcullis sign failed"
    t1=$(date +%s%N)
    [ "$(wc -l <"$RUN_DIR/signatures")" -eq "$1" ] || die "portcullis sign printed fewer than $1 signatures"
    awk -v p="$RUN_DIR/signatures" -v n="$WRK_THREADS" '{ print > (p "." ((NR - 1) % n)) }' "$RUN_DIR/signatures"
    ms=$(((t1 - t0) / 1000000))
    SIGN_LOG+=("$1 in $ms ms")
    log "portcullis sign --count $1: $ms ms"
}
# How many signatures a measured HMAC run gets: HMAC_SIGS, or twice what the warm-up's rate
# would use in DURATION (at least 20000). A run that uses them all sends the rest unsigned,
# gets 401s and is flagged invalid.
hmac_count() {
    if [ -n "${HMAC_SIGS:-}" ]; then echo "$HMAC_SIGS"; return; fi
    awk -v r="${HMAC_WARMUP_RPS:-0}" -v d="$DURATION" -v c="$WRK_CONNECTIONS" \
        'BEGIN { n = int(2 * r * d) + c; if (n < 20000) n = 20000; print n }'
}

# The run's numbers from the load generator's output, one line:
# req/s, average and p99 latency in ms, responses, non-2xx/3xx responses, errors.
parse_output() { # name output-file
    local out=$2 rps avg p99 reqs non2xx sockerr
    case $(loader_of "$1") in
        ws | grpc)
            python3 - "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rps = d["requests"] / d["seconds"] if d["seconds"] else 0
print(f"{rps:.2f} {d['avg_ms']:.3f} {d['p99_ms']:.3f} {d['requests']} 0 {d['errors']}")
PY
            ;;
        oha*)
            python3 - "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
codes = {int(k): v for k, v in d.get("statusCodeDistribution", {}).items()}
responses = sum(codes.values())
non2xx = sum(v for k, v in codes.items() if not 200 <= k < 400)
# oha stops at the deadline with requests in flight, counted as "aborted due to deadline" (wrk
# drops those silently): not errors.
errors = sum(v for k, v in d.get("errorDistribution", {}).items() if k != "aborted due to deadline")
s = d["summary"]
rps = responses / s["total"] if s.get("total") else 0
avg = (s.get("average") or 0) * 1000
p99 = ((d.get("latencyPercentiles") or {}).get("p99") or 0) * 1000
print(f"{rps:.2f} {avg:.3f} {p99:.3f} {responses} {non2xx} {errors}")
PY
            ;;
        *)
            rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
            avg=$(to_ms "$(awk '$1 == "Latency" && NF > 3 {print $2; exit}' "$out")")
            p99=$(to_ms "$(awk '$1 == "99%" {print $2; exit}' "$out")")
            reqs=$(awk '/requests in/ {print $1}' "$out")
            non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
            sockerr=$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$out")
            echo "${rps:-0} $avg $p99 ${reqs:-0} ${non2xx:-0} ${sockerr:-0}"
            ;;
    esac
}

OTHER_LOG=()
measure() { # name round
    local name=$1 round=$2 out proc cpu0 cpu1 help0 help1 busy0 busy1 t0 t1
    local rps avg p99 reqs non2xx err cpu_us other unsigned=0
    case $(loader_of "$name") in oha*) out=$RUN_DIR/oha-$name-$round.json ;; *) out=$RUN_DIR/wrk-$name-$round.txt ;; esac
    proc=$(proc_of "$name")
    if [ "$(loader_of "$name")" = hmac ]; then make_signatures "$(hmac_count)"; fi
    load_cmd "$name" "$DURATION"
    cpu0=$(cpu_ticks "${PID[$proc]}")
    help0=$(helper_ticks "$name")
    busy0=$(busy_ticks)
    t0=$(date +%s%N)
    run_loader "$out" "${LOAD_CMD[@]}"
    t1=$(date +%s%N)
    busy1=$(busy_ticks)
    cpu1=$(cpu_ticks "${PID[$proc]}")
    help1=$(helper_ticks "$name")
    read -r rps avg p99 reqs non2xx err < <(parse_output "$name" "$out")
    if [ -z "$rps" ] || [ -z "$reqs" ] || [ "$reqs" -eq 0 ]; then die "could not parse $out"; fi
    # CPU time (user + system) the target's own processes spent per request, in µs.
    cpu_us=$(awk -v t=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="$reqs" \
        'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    # The share of both CPUs that went to other work during the run: all busy time less the
    # target's, the origin's (and Redis's) and the load generator's. A few % is this script
    # and the kernel's own; clearly more is someone else's work (a build, tests).
    other=$(awk -v b=$((busy1 - busy0)) -v k=$((cpu1 - cpu0 + help1 - help0 + LOADER_TICKS)) \
        -v ns=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$NCPU" \
        'BEGIN { v = 100 * (b - k) / (hz * ns / 1e9 * n); if (v < 0) v = 0; printf "%.0f", v }')
    if [ "$(loader_of "$name")" = hmac ]; then
        unsigned=$(awk '/^Signatures:/ {print $6}' "$out")
        SIGNED[$name]+="$(awk '/^Signatures:/ {print $4}' "$out")/$(awk '/^Signatures:/ {print $2}' "$out") "
        UNSIGNED[$name]=$((${UNSIGNED[$name]:-0} + ${unsigned:-0}))
    fi
    RPS[$name]+="$rps "
    AVG[$name]+="$avg "
    P99[$name]+="$p99 "
    CPU[$name]+="$cpu_us "
    OTHER[$name]+="$other "
    OTHER_LOG+=("$other $name/$round")
    NON2XX[$name]=$((${NON2XX[$name]:-0} + ${non2xx:-0}))
    SOCKERR[$name]=$((${SOCKERR[$name]:-0} + ${err:-0}))
    local note=""
    if [ "$(loader_of "$name")" = hmac ]; then note=", sent unsigned (signatures ran out) ${unsigned:-?}"; fi
    log "round $round $name: $rps req/s, avg $avg ms, p99 $p99 ms, $cpu_us CPU µs/req," \
        "non-2xx ${non2xx:-0}, errors ${err:-0}$note, other work ${other}% of the CPUs"
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

# MEMORY_ONLY=1: no throughput rounds, only the memory table.
if [ "$MEMORY_ONLY" != 1 ]; then
    log "warm-up: ${WARMUP}s per target"
    for name in "${TARGETS[@]}"; do
        case $(loader_of "$name") in oha*) out=$RUN_DIR/oha-$name-warmup.json ;; *) out=$RUN_DIR/wrk-$name-warmup.txt ;; esac
        if [ "$(loader_of "$name")" = hmac ]; then make_signatures "${HMAC_SIGS:-$((WARMUP * 30000))}"; fi
        load_cmd "$name" "$WARMUP"
        run_loader "$out" "${LOAD_CMD[@]}"
        if [ "$(loader_of "$name")" = hmac ]; then
            read -r HMAC_WARMUP_RPS _ < <(parse_output "$name" "$out")
            log "HMAC warm-up: $HMAC_WARMUP_RPS req/s; measured runs get $(hmac_count) signatures each"
        fi
    done

    n=${#TARGETS[@]}
    for ((round = 1; round <= ROUNDS; round++)); do
        for ((i = 0; i < n; i++)); do
            # Rotate the order every round so that drift and position effects hit every target.
            measure "${TARGETS[$(((i + round - 1) % n))]}" "$round"
        done
    done
fi

declare -A RSS=() PSS=()
for name in "${TARGETS[@]}"; do
    pid=${PID[$(proc_of "$name")]}
    kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) died during the test"
    RSS[$name]=$(rss_kib "$pid")
    PSS[$name]=$(pss_kib "$pid")
done

# The TLS Portcullis's own count of what it decided (whole run: checks, warm-up, rounds).
TLS_METRICS=""
if [ "$NEED_TLS" = 1 ]; then
    TLS_METRICS=$(curl -sS --max-time 5 "http://127.0.0.1:$TLS_ADMIN_PORT/metrics" 2>/dev/null |
        grep -E '^portcullis_(signature_nonces_total|auth_decisions_total|policy_decisions_total|client_cert_refusals_total)' |
        sed 's/^portcullis_//' | paste -sd ';' | sed 's/;/; /g' || true)
fi

# ---------------------------------------------------------------- PROFILE=1
# One more run of the target's load generator, DURATION seconds, with perf recording the
# target's process (all its threads); the report, flat (-g none) so that it stays short: self
# time by thread, self time by symbol (--no-children), and time including callees (--children).
PROFILE_LOG=()
profile() { # name
    local name=$1 proc pid data out lout note rps deadline samples
    proc=$(proc_of "$name")
    pid=${PID[$proc]}
    data=$RUN_DIR/perf-$name.data
    out=$RUN_DIR/profile-$name.txt
    case $(loader_of "$name") in oha*) lout=$RUN_DIR/oha-$name-profile.json ;; *) lout=$RUN_DIR/wrk-$name-profile.txt ;; esac
    if [ "$(loader_of "$name")" = hmac ]; then make_signatures "$(hmac_count)"; fi
    load_cmd "$name" "$DURATION"
    "$PERF" record -F "$PROFILE_FREQ" --call-graph dwarf --no-buildid-cache -p "$pid" -o "$data" \
        >"$data.log" 2>&1 &
    PID[perf]=$!
    # perf has attached to the threads once it is still running a second later (it exits at
    # once when it may not record).
    sleep 1
    if ! kill -0 "${PID[perf]}" 2>/dev/null; then
        wait "${PID[perf]}" 2>/dev/null || true
        unset 'PID[perf]'
        note="perf record could not record $proc (pid $pid): $(grep . "$data.log" | tail -3 | tr '\n' ' ')($(perf_permissions))"
        log "PROFILE: $name: $note; going on without its profile"
        echo "$note" >"$out"
        PROFILE_LOG+=("$name: **no profile**: $note")
        rm -f "$data"
        return 0
    fi
    run_loader "$lout" "${LOAD_CMD[@]}"
    kill -INT "${PID[perf]}" 2>/dev/null || true
    deadline=$((SECONDS + 60))
    while kill -0 "${PID[perf]}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "${PID[perf]}" 2>/dev/null || true
    wait "${PID[perf]}" 2>/dev/null || true
    unset 'PID[perf]'
    read -r rps _ < <(parse_output "$name" "$lout")
    samples=$(grep -o '([0-9]* samples)' "$data.log" | tr -d '()' || true)
    log "PROFILE: $name recorded ($rps req/s while recorded, ${samples:-no samples}); perf report"
    {
        echo "# $name: \`perf record -F $PROFILE_FREQ --call-graph dwarf -p $pid\` ($proc, every thread),"
        echo "# one ${DURATION}s run of $(loader_label "$name") after the measured rounds: $rps req/s while"
        echo "# recorded (perf's own cost included: not a measurement); ${samples:-no samples}."
        echo
        echo "## Self time by thread (perf report --no-children --sort pid: thread id and name)"
        "$PERF" report -i "$data" --no-children --stdio --percent-limit 0.5 -g none --sort pid
        echo
        echo "## Self time by symbol (perf report --no-children -g none --percent-limit 0.5)"
        "$PERF" report -i "$data" --no-children --stdio --percent-limit 0.5 -g none --sort dso,sym
        echo
        echo "## Time including callees (perf report --children -g none --percent-limit 0.5)"
        "$PERF" report -i "$data" --children --stdio --percent-limit 0.5 -g none --sort dso,sym
    } 2>"$out.stderr" | sed -E 's/ +$//; /^# [. ]+$/s/^(.{0,100}).*/\1/' >"$out" || log "PROFILE: $name: perf report failed (see $out.stderr)"
    if [ "${KEEP_PERF:-0}" = 1 ]; then
        PROFILE_LOG+=("$name: profile-$name.txt ($rps req/s while recorded, ${samples:-no samples}; perf-$name.data kept)")
    else
        rm -f "$data"
        PROFILE_LOG+=("$name: profile-$name.txt ($rps req/s while recorded, ${samples:-no samples})")
    fi
}
for name in "${PROFILE_TARGETS[@]}"; do profile "$name"; done

# ---------------------------------------------------------------- MEMORY=N
# idle_connections.py reads the process's VmRSS and Pss (with its children) at baseline, with
# N idle keep-alive connections each after one completed request, after closing them and 50
# short requests, and for a second wave of N. In the background and waited for, like the load
# generator, so that a signal stops it at once; bounded by N and a deadline.
MEMORY_LOG=()
memory() { # name
    local name=$1 pid log_file rc=0
    local -a tls=()
    pid=${PID[$(proc_of "$name")]}
    log_file=$RUN_DIR/memory-$name.txt
    if [ -n "${SCHEME[$name]:-}" ]; then tls=(--tls-ca "$RUN_DIR/ca.pem"); fi
    log "MEMORY: $name, $MEMORY idle connections, two waves"
    timeout $((120 + MEMORY / 20)) python3 "$HERE/idle_connections.py" --port "${PORT[$name]}" --pid "$pid" \
        "${tls[@]}" --label "$name" --json "$RUN_DIR/memory-$name.json" "$MEMORY" >"$log_file" 2>&1 &
    PID[idle_connections]=$!
    wait "${PID[idle_connections]}" || rc=$?
    unset 'PID[idle_connections]'
    sed 's/^/  /' "$log_file" >&2
    if [ "$rc" != 0 ]; then
        rm -f "$RUN_DIR/memory-$name.json"
        MEMORY_LOG+=("$name: **failed** (exit $rc): $(tail -1 "$log_file")")
        log "MEMORY: $name failed (exit $rc), see $log_file; going on"
    fi
}
for name in "${MEMORY_TARGETS[@]}"; do memory "$name"; done
# The memory table, from the JSON files (KiB) idle_connections.py wrote.
memory_table() {
    local -a files=()
    local name
    for name in "${MEMORY_TARGETS[@]}"; do files+=("$name=$RUN_DIR/memory-$name.json"); done
    python3 - "$MEMORY" "${files[@]}" <<'PY'
import json, os, sys
n = int(sys.argv[1])
print(f"| target | baseline MiB | held MiB | KiB per connection | after-close MiB | second-wave held MiB"
      f" | second-wave KiB per connection | after second close MiB | PSS KiB per connection (waves 1 / 2)"
      f" | still open when read (waves 1 / 2) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
mib = lambda k: f"{k / 1024:.1f}"
for arg in sys.argv[2:]:
    name, path = arg.split("=", 1)
    if not os.path.exists(path):
        print(f"| {name} | failed (memory-{name}.txt) | | | | | | | | |")
        continue
    r = json.load(open(path))
    per = lambda held, base: f"{(r[held] - r[base]) / n:.1f}"
    print(f"| {name} | {mib(r['base_rss'])} | {mib(r['held_rss1'])} | {per('held_rss1', 'base_rss')}"
          f" | {mib(r['after_rss1'])} | {mib(r['held_rss2'])} | {per('held_rss2', 'base_rss')}"
          f" | {mib(r['after_rss2'])} | {per('held_pss1', 'base_pss')} / {per('held_pss2', 'base_pss')}"
          f" | {r['open1']} / {r['open2']} |")
PY
}

# ---------------------------------------------------------------- the table
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
med() { median "${1:-}" || echo 0; }
# A run with any non-2xx response, error or unsigned request is not comparable.
valid() { [ "${NON2XX[$1]:-0}" -eq 0 ] && [ "${SOCKERR[$1]:-0}" -eq 0 ] && [ "${UNSIGNED[$1]:-0}" -eq 0 ]; }

NGINX_RPS=$(med "${RPS[nginx]:-}")
declare -A DESC=(
    [nginx-tls]="nginx terminating TLS, GET /"
    [portcullis-tls]="Portcullis TLS listener, public route, GET / (pass-through over TLS)"
    [pingora-bare-tls]="bare Pingora (no hooks), its own TLS listener (TlsSettings::intermediate, default 64 KiB read buffer; Portcullis's: none, OpenSSL reading ahead), GET /"
    [portcullis-post-tls]="TLS, public route, POST of a 1 KiB body"
    [portcullis-hmac]="TLS, \`auth: { hmac: true }\`, POST of the same 1 KiB body, each request signed once (RFC 9421, hmac-sha256)"
    [portcullis-tls-oha]="TLS, public route, GET / (pass-through over TLS)"
    [portcullis-mtls]="mTLS listener (client certificate required), \`auth: { mtls: true }\`, GET /mtls"
    [nginx-mtls]="nginx, mTLS (\`ssl_verify_client on\`), GET /"
    [portcullis-tls-newconn]="TLS, public route, GET /, a new connection per request"
    [portcullis-mtls-newconn]="mTLS, \`mtls: true\`, GET /mtls, a new connection per request"
    [nginx-tls-newconn]="nginx TLS, GET /, a new connection per request"
    [nginx-mtls-newconn]="nginx mTLS, GET /, a new connection per request"
)
# "a / b = ratio (a req/s / b req/s)" when both were measured; flagged when either is invalid.
compare() { # text a b
    local a=$2 b=$3 ra rb per_round
    selected "$a" && selected "$b" || return 0
    ra=$(med "${RPS[$a]}")
    rb=$(med "${RPS[$b]}")
    if valid "$a" && valid "$b"; then
        # Round by round too (both targets are measured once in every round).
        per_round=$(awk -v a="${RPS[$a]}" -v b="${RPS[$b]}" 'BEGIN { n = split(a, x, " "); split(b, y, " ")
            for (i = 1; i <= n; i++) printf "%s%.2f", (i > 1 ? ", " : ""), (y[i] > 0 ? x[i] / y[i] : 0) }')
        printf -- '- %s: %s / %s = **%s** (%.0f / %.0f req/s; per round %s; CPU µs/req %s vs %s)\n' "$1" "$a" "$b" \
            "$(ratio "$ra" "$rb")" "$ra" "$rb" "$per_round" "$(med "${CPU[$a]}")" "$(med "${CPU[$b]}")"
    else
        printf -- '- %s: %s / %s: **invalid** (non-2xx responses, errors or unsigned requests in a run)\n' "$1" "$a" "$b"
    fi
}
{
    if [ "$MEMORY_ONLY" != 1 ]; then
        echo "wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${DURATION}s --latency, $ROUNDS round(s), median per target;" \
            "one worker per proxy; origin: nginx returning \"ok\" on 127.0.0.1:${PORT[origin]}."
        echo
        echo "| target | req/s | ratio to nginx | avg latency | p99 latency | RSS MiB | RSS ratio to nginx | PSS MiB | CPU µs/req | non-2xx / socket errors |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for name in "${TARGETS[@]}"; do
            rps=$(med "${RPS[$name]}")
            label=$name
            rss_ratio=$(ratio "${RSS[$name]}" "${RSS[nginx]:-0}")
            nginx_ratio=$(ratio "$rps" "$NGINX_RPS")
            if [ "$name" = origin ]; then label="origin (direct, no proxy)"; rss_ratio="-"; fi
            if [ "$name" = pingora-bare ]; then label="Pingora, bare (no hooks)"; fi
            # Rows measured with oha are not comparable with wrk's nginx row.
            case $(loader_of "$name") in
                oha*) label="$name (oha)"; nginx_ratio="-" ;;
                ws | grpc | preflight) nginx_ratio="-" ;;
            esac
            printf '| %s | %.0f | %s | %.2f ms | %.2f ms | %s | %s | %s | %s | %d / %d |\n' \
                "$label" "$rps" "$nginx_ratio" \
                "$(med "${AVG[$name]}")" "$(med "${P99[$name]}")" \
                "$(mib "${RSS[$name]}")" "$rss_ratio" "$(mib "${PSS[$name]}")" \
                "$(med "${CPU[$name]}")" "${NON2XX[$name]}" "${SOCKERR[$name]}"
        done
        echo
        echo "Per-round req/s (rounds in order; the target order rotates every round):"
        for name in "${TARGETS[@]}"; do echo "- $name: ${RPS[$name]% }"; done
        echo
        echo "- RSS / PSS: VmRSS / Pss of the process and its children (nginx: master + worker), read after the last round."
        echo "- CPU µs/req: user + system CPU time of the target's own processes during a measured run, divided by"
        echo "  the requests completed (origin row: the origin alone; proxy rows: the proxy alone)."
        echo "- non-2xx / socket errors: summed over all rounds, from wrk's \"Non-2xx or 3xx responses\" and"
        echo "  \"Socket errors\" lines (oha rows: its status codes and errors, less the requests still in"
        echo "  flight at the deadline)."
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
        busiest=$(printf '%s\n' "${OTHER_LOG[@]}" | sort -rn | head -3 | awk '{ printf "%s%s %s%%", (NR > 1 ? ", " : ""), $2, $1 }')
        echo "- Other work during the measured runs (share of both CPUs used by neither the target, the" \
            "origin nor the load generator): median $(med "$(printf '%s\n' "${OTHER_LOG[@]}" | awk '{ printf "%s ", $1 }')" | awk '{ printf "%.0f", $1 }')%," \
            "highest: $busiest."

        if selected portcullis-ws || selected portcullis-grpc || selected portcullis-preflight; then
            echo
            echo "### WebSocket, gRPC and CORS preflights (issue 17)"
            echo
            echo "Each beside nginx doing the same, with the same load generator. WebSocket: round trips of a"
            echo "64-byte text message, each of $WRK_CONNECTIONS upgraded connections waiting for its echo (a \"request\""
            echo "is one round trip). gRPC: unary calls of a 64-byte message over h2c, $GRPC_CONNECTIONS connections × $GRPC_STREAMS"
            echo "calls in flight, each answered with its message and grpc-status 0 (origins: load-tests/streams.rs)."
            echo "Preflight: OPTIONS with Origin and Access-Control-Request-Method, answered 204 by the proxy."
            echo
            compare "WebSocket round trips, Portcullis vs nginx" portcullis-ws nginx-ws
            compare "gRPC unary calls over h2c, Portcullis vs nginx" portcullis-grpc nginx-grpc
            compare "CORS preflights, Portcullis vs nginx" portcullis-preflight nginx-preflight
            compare "WebSocket round trip vs a proxied GET (Portcullis)" portcullis-ws portcullis
            compare "gRPC unary call vs a proxied GET (Portcullis)" portcullis-grpc portcullis
            compare "preflight vs a proxied GET (Portcullis)" portcullis-preflight portcullis
        fi
        if [ "$NEED_TLS" = 1 ]; then
            echo
            echo "### TLS, mTLS and HMAC-signed requests (issue 7)"
            echo
            echo "Each row's ratio is to Portcullis's pass-through over TLS (GET / on its TLS listener) measured with"
            echo "the same load generator and connection mode (the baseline column). wrk cannot present a client"
            echo "certificate, so the mTLS rows and their baselines are measured with oha $("$OHA" --version 2>/dev/null | awk '{print $2}')"
            echo "(rustls, HTTP/1.1, its TLS sessions kept and offered again on new connections)."
            echo "Certificates: ECDSA P-256; TLS 1.3."
            echo
            echo "| target | what | load generator | req/s | baseline | ratio to baseline | avg latency | p99 latency | CPU µs/req | non-2xx / errors | other work % | valid |"
            echo "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|"
            for name in "${TARGETS[@]}"; do
                [ -n "${SCHEME[$name]:-}" ] || continue
                rps=$(med "${RPS[$name]}")
                base=${BASE[$name]}
                r="-"
                if selected "$base"; then r=$(ratio "$rps" "$(med "${RPS[$base]}")"); fi
                ok=yes
                if ! valid "$name"; then ok="**NO**"; r="invalid"; fi
                extra=""
                if [ -n "${UNSIGNED[$name]:-}" ]; then extra=" (+${UNSIGNED[$name]} unsigned)"; fi
                printf '| %s | %s | %s | %.0f | %s | %s | %.2f ms | %.2f ms | %s | %d / %d%s | %s | %s |\n' \
                    "$name" "${DESC[$name]}" "$(loader_label "$name")" "$rps" "$base" "$r" \
                    "$(med "${AVG[$name]}")" "$(med "${P99[$name]}")" "$(med "${CPU[$name]}")" \
                    "${NON2XX[$name]}" "${SOCKERR[$name]}" "$extra" "$(med "${OTHER[$name]}")" "$ok"
            done
            echo
            echo "Ratios (medians; each pair measured with the same load generator in the same run):"
            compare "mTLS, keep-alive, vs pass-through over TLS" portcullis-mtls portcullis-tls-oha
            compare "mTLS, a new connection per request (sessions resumed), vs TLS the same way" portcullis-mtls-newconn portcullis-tls-newconn
            compare "HMAC-signed POST 1 KiB vs unsigned POST 1 KiB (the signature's cost)" portcullis-hmac portcullis-post-tls
            compare "HMAC-signed POST 1 KiB vs GET pass-through over TLS" portcullis-hmac portcullis-tls
            compare "POST 1 KiB vs GET, both over TLS (the body's cost)" portcullis-post-tls portcullis-tls
            compare "TLS vs plain HTTP (pass-through)" portcullis-tls portcullis
            compare "Portcullis pass-through vs bare Pingora, both over TLS" portcullis-tls pingora-bare-tls
            compare "bare Pingora: TLS vs plain HTTP" pingora-bare-tls pingora-bare
            compare "Portcullis vs nginx, TLS" portcullis-tls nginx-tls
            compare "Portcullis vs nginx, mTLS, keep-alive" portcullis-mtls nginx-mtls
            compare "Portcullis vs nginx, TLS, new connections" portcullis-tls-newconn nginx-tls-newconn
            compare "Portcullis vs nginx, mTLS, new connections" portcullis-mtls-newconn nginx-mtls-newconn
            compare "nginx: mTLS vs TLS, new connections" nginx-mtls-newconn nginx-tls-newconn
            compare "new connection per request vs keep-alive, TLS" portcullis-tls-newconn portcullis-tls-oha
            compare "oha vs wrk on the same target (TLS pass-through)" portcullis-tls-oha portcullis-tls
            echo
            for line in "${RESUMPTION[@]}"; do echo "- Session resumption, $line"; done
            if selected portcullis-hmac; then
                echo "- HMAC: signatures made by \`portcullis sign --count\` just before each run (warm-up first):" \
                    "$(printf '%s; ' "${SIGN_LOG[@]}" | sed 's/; $//')."
                echo "  Used / made per measured round: ${SIGNED[portcullis-hmac]% }; requests sent unsigned because the" \
                    "signatures ran out: ${UNSIGNED[portcullis-hmac]:-0}; non-2xx: ${NON2XX[portcullis-hmac]:-0}" \
                    "(any of these makes the row invalid)."
            fi
            echo "- Counters of the TLS Portcullis (admin /metrics at the end; the whole run, checks and" \
                "warm-up included): ${TLS_METRICS:-none read}."
            echo "- Error-log lines: nginx-tls $(grep -c . "$RUN_DIR/nginx-tls.error.log" || true)," \
                "portcullis-tls $(grep -c ERROR "$RUN_DIR/portcullis-tls.out" || true) ERROR, of which" \
                "$(grep -c 'Downstream ConnectionClosed' "$RUN_DIR/portcullis-tls.out" || true) 'Downstream ConnectionClosed' and" \
                "$(grep -c 'TLS accept() failed: \(unexpected EOF\|Connection reset by peer\)' "$RUN_DIR/portcullis-tls.out" || true)" \
                "'TLS accept() failed: unexpected EOF / Connection reset by peer' (handshakes oha abandoned at the" \
                "end of a --disable-keepalive run)."
            if selected pingora-bare-tls; then
                echo "- pingora-bare-tls: $(grep -c ERROR "$RUN_DIR/pingora-bare-tls.out" || true) ERROR lines in its log."
            fi
        fi
    fi
    if [ ${#PROFILE_LOG[@]} -gt 0 ]; then
        echo
        echo "### Profiles (PROFILE=1)"
        echo
        echo "One more ${DURATION}s run per target after the measured rounds, with \`perf record -F $PROFILE_FREQ"
        echo "--call-graph dwarf\` on the target's process; the reports are in the run folder:"
        for line in "${PROFILE_LOG[@]}"; do echo "- $line"; done
    fi
    if [ ${#MEMORY_TARGETS[@]} -gt 0 ]; then
        echo
        echo "### Memory per idle connection (MEMORY=$MEMORY)"
        echo
        echo "VmRSS of each target's process (nginx: master and worker) from /proc; $MEMORY keep-alive connections,"
        echo "each idle after one completed GET /, held 2 s; closed, then 50 short requests and 2 s; then a second"
        echo "wave of $MEMORY the same way. KiB per connection: (held - baseline) / $MEMORY, both waves over the same"
        echo "baseline (a second wave no higher than the first: memory reused, not grown). PSS: Pss from"
        echo "smaps_rollup, shared pages counted once. $([ "$MEMORY_ONLY" = 1 ] && echo "MEMORY_ONLY=1: the processes had served only the check requests and 20 warm-up requests." || echo "Read after the throughput rounds (and profiles), on warm processes.")"
        echo
        memory_table
        for line in "${MEMORY_LOG[@]}"; do echo "- $line"; done
    fi
} | tee "$RUN_DIR/results.md"

log "raw outputs in $RUN_DIR"
