#!/usr/bin/env bash
# Local stand-ins for the cloud services the test suite talks to (see ../shared/SERVICES.md).
#
# Each service is one block: install_<name>, start_<name>, ready_<name>. Add a connector's
# server by writing its block and appending its name to STRATA_SERVICES below. Servers bind
# 127.0.0.1, keep their state under .services/, and are stopped by the PIDs this script saved.
#
#   scripts/services.sh install   # install every service (idempotent)
#   scripts/services.sh start     # start them and wait until each is ready
#   scripts/services.sh stop      # stop what start started
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=.services
mkdir -p "$STATE"

# The services the suite needs today. The file connector tests run against local disk, so none
# yet; the S3 (moto), Azure (Azurite), MongoDB (SecantusDB), Snowflake (fakesnow) and REST
# (json-server) connectors add theirs here.
STRATA_SERVICES=${STRATA_SERVICES-""}

wait_for() { # name, command..., polled for up to 60 s
  local name=$1; shift
  for _ in $(seq 1 120); do
    if "$@" >/dev/null 2>&1; then echo "services: $name is ready"; return 0; fi
    sleep 0.5
  done
  echo "services: $name did not become ready; its log:" >&2
  cat "$STATE/$name.log" >&2 || true
  return 1
}

start_bg() { # name, command...
  local name=$1; shift
  nohup "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

# A service block looks like this (moto, for the S3 connector):
#   install_moto() { python3 -c 'import moto' 2>/dev/null || pip install --quiet 'moto[server]==5.2.5'; }
#   start_moto()   { start_bg moto moto_server -H 127.0.0.1 -p 5000; }
#   ready_moto()   { wait_for moto curl -sf http://127.0.0.1:5000/moto-api/; }

cmd=${1:-}
case "$cmd" in
  install)
    for s in $STRATA_SERVICES; do "install_$s"; done ;;
  start)
    for s in $STRATA_SERVICES; do "start_$s"; done
    for s in $STRATA_SERVICES; do "ready_$s"; done
    echo "services: started [${STRATA_SERVICES}]" ;;
  stop)
    for f in "$STATE"/*.pid; do
      [ -e "$f" ] || continue
      kill "$(cat "$f")" 2>/dev/null || true
      rm -f "$f"
    done ;;
  list)
    echo "$STRATA_SERVICES" ;;
  *)
    echo "usage: scripts/services.sh install|start|stop|list" >&2; exit 2 ;;
esac
