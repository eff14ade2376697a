#!/usr/bin/env bash
# Instructions per request, counted: bare Pingora and Portcullis as pass-through proxies in
# front of the same origin, each under valgrind's callgrind, with counting on for exactly N
# keep-alive requests (after a warm-up) and off otherwise. Counts are deterministic where the
# CPU-time A/B of run.sh is noisy on a small VM, and `callgrind_annotate --inclusive=yes` of the
# two profiles says where the difference goes (load-tests/RESULTS.md, "Issue 15, second run").
#
#   load-tests/callgrind.sh              # N=20000 over plain HTTP
#   TLS=1 N=8000 load-tests/callgrind.sh # over TLS (a self-signed certificate made here)
#
# The 8 connections' accepts (and TLS handshakes) fall inside the count: with TLS, take N of a
# few thousand or more so they weigh little. Prints "target: instructions per request" for each; profiles (cg.<target>.out.*) and their
# inclusive annotations (inclusive-<target>.txt) stay in load-tests/out/callgrind-<time>/.
# Everything runs on 127.0.0.1 (ports 18080, 18089/18443, 18091/18448, 19901); every process
# started here is stopped by its pid on exit. Installs valgrind (Debian) when it is missing,
# unless NO_INSTALL=1.
set -euo pipefail
N=${N:-20000}
TLS=${TLS:-0}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
RUN_DIR=$HERE/out/callgrind-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RUN_DIR"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
say() { echo "[callgrind.sh] $*" >&2; }

for tool in valgrind nginx; do
    if ! command -v "$tool" >/dev/null; then
        [ "${NO_INSTALL:-0}" = 1 ] && { say "$tool is missing"; exit 1; }
        pkg=$tool; [ "$tool" = nginx ] && pkg=nginx-light
        SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
        $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2
    fi
done
(cd "$ROOT" && cargo build --release --bin portcullis --example bare_pingora >&2)

sed "s#@RUN_DIR@#$RUN_DIR#g" "$HERE/peers/origin.conf" > "$RUN_DIR/origin.conf"
nginx -c "$RUN_DIR/origin.conf" -p "$RUN_DIR" > "$RUN_DIR/origin.out" 2>&1 &
PIDS+=($!)

if [ "$TLS" = 1 ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$RUN_DIR/server.key" -out "$RUN_DIR/server.pem" \
        -days 1 -subj /CN=localhost 2>/dev/null
    PT_PORT=18443 BARE_PORT=18448 CLIENT_TLS=--tls
    LISTENER="  - address: 127.0.0.1:18443
    tls: { certificate: $RUN_DIR/server.pem, key: $RUN_DIR/server.key }"
    BARE_ARGS=(- 127.0.0.1:18080 1 --tls 127.0.0.1:18448 "$RUN_DIR/server.pem" "$RUN_DIR/server.key")
else
    PT_PORT=18089 BARE_PORT=18091 CLIENT_TLS=
    LISTENER="  - address: 127.0.0.1:18089"
    BARE_ARGS=(127.0.0.1:18091 127.0.0.1:18080 1)
fi
# As load-tests/peers/portcullis.yaml's pass-through, but a connection may carry every request
# (bare Pingora has no such limit).
cat > "$RUN_DIR/portcullis.yaml" <<YAML
server:
  threads: 1
  max_requests_per_connection: 1000000
  pid_file: $RUN_DIR/portcullis.pid
  upgrade_sock: $RUN_DIR/portcullis-upgrade.sock
  grace_period: 1s
  graceful_shutdown_timeout: 1s
listeners:
$LISTENER
admin:
  address: 127.0.0.1:19901
access_log:
  enabled: false
upstreams:
  origin:
    backends: [127.0.0.1:18080]
routes:
  - { name: all, match: { path_prefix: / }, upstream: origin, auth: public }
YAML
"$ROOT/target/release/portcullis" check -c "$RUN_DIR/portcullis.yaml" >&2

wait_for_port() {
    for _ in $(seq 1 300); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), timeout=1).close()" \
            2>/dev/null && return 0
        sleep 0.2
    done
    say "nothing listens on $1"; exit 1
}

# count NAME PORT CMD...: instructions per request of CMD serving exactly N requests.
count() {
    local name=$1 port=$2; shift 2
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$RUN_DIR/cg.$name.out" \
        "$@" > "$RUN_DIR/$name.out" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_for_port "$port"
    python3 "$HERE/keepalive_requests.py" "$port" 3000 $CLIENT_TLS >/dev/null
    callgrind_control -i on "$pid" >/dev/null
    python3 "$HERE/keepalive_requests.py" "$port" "$N" $CLIENT_TLS >/dev/null
    callgrind_control -i off "$pid" >/dev/null
    callgrind_control -d "$pid" >/dev/null
    kill "$pid"; wait "$pid" 2>/dev/null || true
    local total
    total=$(awk '/^totals:/ {print $2}' "$RUN_DIR/cg.$name.out.1")
    callgrind_annotate --inclusive=yes --threshold=100 "$RUN_DIR/cg.$name.out.1" \
        > "$RUN_DIR/inclusive-$name.txt" 2>/dev/null
    echo "$name: $((total / N)) instructions per request ($N requests)"
}

count pingora-bare "$BARE_PORT" "$ROOT/target/release/examples/bare_pingora" "${BARE_ARGS[@]}"
count portcullis "$PT_PORT" "$ROOT/target/release/portcullis" run -c "$RUN_DIR/portcullis.yaml"
say "profiles in $RUN_DIR"
