#!/usr/bin/env bash
# crawl2serve developer entry point.
#   ./dev.sh main   set up .venv, materialize the whole lineage (today's crawl partition) on the embedded default,
#                   send a few requests through the gateway it starts, and materialize this hour's monitoring
#   ./dev.sh test   set up .venv and run the test suite
#   ./dev.sh setup  only set up .venv
#   ./dev.sh feast ARGS   the Feast CLI on feature_repo/ with the data root's store, e.g. ./dev.sh feast serve
#   ./dev.sh ui     dg dev (webserver + daemon: schedules and sensors tick) on http://127.0.0.1:3000
#   ./dev.sh check  dg check defs (what CI checks too) and ruff
#   ./dev.sh instance [START]  create $DAGSTER_HOME/dagster.yaml and record where the partitions start (main and ui do)
set -euo pipefail
cd "$(dirname "$0")"
# dg and the tools below run from the project's .venv (dg warns when the active environment is another one)
export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"

export DAGSTER_DISABLE_TELEMETRY=1 DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/dagster_home}"
PY="${PYTHON:-python3}"

setup() {
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "crawl2serve needs Python 3.11+ ($PY is older)" >&2; exit 1; }
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  local stamp=.venv/.crawl2serve-installed want
  want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/pip install --quiet --upgrade pip
    # torch is pinned to 2.13.0 in pyproject.toml: its CPU wheel, not the CUDA build from the registry.
    .venv/bin/pip install --quiet -e ".[dev]"
    echo "$want" > "$stamp"
  fi
  mkdir -p "$DAGSTER_HOME"
}

# The instance: dagster_home/dagster.yaml (telemetry and the welcome dialog off) copied into a DAGSTER_HOME that
# has no dagster.yaml. Where the partitions start (assets/partitions.py): START (the first run's day, or its hour)
# recorded once, in a fresh instance, so that every code-server start counts the same partitions, and moved earlier
# only when a run asks for an earlier day; an instance with runs from before keeps the code's default start.
# CRAWL2SERVE_PARTITIONS_START, when set, wins.
instance() {
  local start="${1:-}" file="$DAGSTER_HOME/partitions_start"
  mkdir -p "$DAGSTER_HOME"
  [ -f "$DAGSTER_HOME/dagster.yaml" ] || cp dagster_home/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
  if [ -n "$start" ]; then
    if [ ! -s "$file" ] && [ ! -d "$DAGSTER_HOME/storage" ]; then
      echo "$start" > "$file"
    elif [ -s "$file" ] && [[ "${start:0:10}" < "$(cut -c1-10 "$file")" ]]; then
      echo "$start" > "$file"
    fi
  fi
  if [ -s "$file" ] && [ -z "${CRAWL2SERVE_PARTITIONS_START:-}" ]; then
    CRAWL2SERVE_PARTITIONS_START="$(cat "$file")"
    export CRAWL2SERVE_PARTITIONS_START
  fi
}

case "${1:-}" in
  setup) setup ;;
  main)
    setup
    today="$(date -u +%F)"
    partition="${2:-$today}"
    # a fresh instance's partitions start at this run: its hour when it crawls today, else the day it crawls
    instance "$([ "$partition" = "$today" ] && date -u +%Y-%m-%d-%H:00 || echo "$partition")"
    dg launch --job main --partition "$partition" -c pipelines/embedded.yaml -c pipelines/console.yaml
    hour="$(date -u +%Y-%m-%d-%H:00)"  # the hour the demo's requests arrive in (the monitoring partition)
    .venv/bin/python -m crawl2serve.serving demo
    dg launch --job monitoring --partition "$hour" -c pipelines/console.yaml
    .venv/bin/python -m crawl2serve.pipelines.summary --partition "$partition" --hour "$hour"
    ;;
  feast)
    setup
    shift
    root="${CRAWL2SERVE_DATA_ROOT:-$PWD/data}"
    export CRAWL2SERVE_FEAST_DIR="${CRAWL2SERVE_FEAST_DIR:-$(cd "$root" 2>/dev/null && pwd || echo "$root")/feast}"
    export CRAWL2SERVE_REDIS="${CRAWL2SERVE_REDIS:-127.0.0.1:6379}"
    exec .venv/bin/feast -c feature_repo "$@"
    ;;
  ui)
    setup
    instance "$(date -u +%Y-%m-%d-%H:00)"
    exec dg dev --host 127.0.0.1 --port "${2:-3000}"
    ;;
  instance)
    instance "${2:-}"
    echo "$DAGSTER_HOME/dagster.yaml; partitions start: ${CRAWL2SERVE_PARTITIONS_START:-default (assets/partitions.py)}"
    ;;
  check)
    setup
    dg check defs
    ruff check .
    ruff format --check .
    ;;
  test)
    setup
    shift
    # lint and format first (under a second); `dg check defs` is a test (tests/test_packaging.py)
    ruff check --quiet . && ruff format --check --quiet . || { echo "ruff: run 'ruff check --fix . && ruff format .'" >&2; exit 1; }
    .venv/bin/python -m pytest "$@"
    ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
