#!/usr/bin/env bash
# Prints the demo tour `make run` shows: requests to paste against the bundled
# conf/portcullis.yaml, with two freshly minted demo tokens (1 h) and the demo API key.
# Usage: conf/demo/tour.sh [PORTCULLIS_BIN] [GATEWAY_ADDR] [ADMIN_ADDR]
# The same requests, with the same answers, are run by the test
# `demo::the_bundled_demo_answers_the_tour_as_printed` (tests/gateway/demo.rs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-target/release/portcullis}
gw=${2:-127.0.0.1:8080}
admin=${3:-127.0.0.1:9901}
mint() { "$bin" token --key "$here/jwt-signing-key.pem" --iss https://demo.portcullis.invalid \
    --aud demo-api --ttl 1h "$@"; }
user=$(mint --sub alice --roles user)
root=$(mint --sub root --roles admin,user)
key=$(cat "$here/api-key")
cat <<TOUR
Demo credentials (conf/demo/, demo only): two tokens minted now by \`portcullis token\`, valid 1 h,
and the demo consumer's API key.

  USER=$user
  ADMIN=$root
  KEY=$key

Paste these lines into a shell, then try:

  curl -s  http://$gw/status                                      # 200: a public route
  curl -si http://$gw/api/hello                                   # 401 token_missing, WWW-Authenticate: Bearer
  curl -s  http://$gw/api/hello -H "Authorization: Bearer \$USER" # 200: the origin got X-User-ID: alice
  curl -s  http://$gw/api/hello -H "Authorization: Bearer \$USER" -H "X-User-ID: mallory"
                                                                  # 200: still alice; client identity headers are dropped
  curl -si http://$gw/api/admin/users -H "Authorization: Bearer \$USER"   # 403 insufficient_role
  curl -s  http://$gw/api/admin/users -H "Authorization: Bearer \$ADMIN"  # 200: root has the admin role
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{http_code} ' http://$gw/reports -H "X-API-Key: \$KEY"; done; echo
                                                                  # 200 200 200 200 200 429: 5 a minute per consumer
  curl -si http://$gw/reports -H "X-API-Key: \$KEY"               # 429 rate_limited with Retry-After
  $bin explain -c conf/portcullis.yaml -H "Authorization: Bearer \$USER" GET /api/admin/users
                                                                  # why that 403: each check, then the decision
  curl -s  http://$admin/metrics | grep portcullis_auth_decisions_total

Ctrl-C stops everything.
TOUR
