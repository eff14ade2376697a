#!/usr/bin/env bash
# Check the unit file with `systemd-analyze verify`. The unit names the installed binary;
# the check points it at the one just built, and fails on any complaint about the unit.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(pwd)/target/debug/portcullis"
[ -x "$bin" ] || cargo build
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
sed "s#/usr/local/bin/portcullis#$bin#g" systemd/portcullis.service > "$dir/portcullis.service"
out="$(systemd-analyze verify --man=no "$dir/portcullis.service" 2>&1 || true)"
# A container has no running systemd; complaints about the host itself are not about us.
problems="$(printf '%s\n' "$out" | grep -F 'portcullis.service' || true)"
if [ -n "$problems" ]; then
  echo "systemd-analyze verify found problems in systemd/portcullis.service:"
  printf '%s\n' "$problems"
  exit 1
fi
echo "systemd/portcullis.service: systemd-analyze verify OK"
