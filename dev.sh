#!/usr/bin/env bash
# crawl2serve developer entry point.
#   ./dev.sh main   set up .venv, materialize the whole lineage (today's crawl partition) on the embedded default,
#                   send a few requests through the gateway it starts, and materialize this hour's monitoring
#   ./dev.sh test   set up .venv and run the test suite
#   ./dev.sh setup  only set up .venv
#   ./dev.sh feast ARGS   the Feast CLI on feature_repo/ with the data root's store, e.g. ./dev.sh feast serve
#   ./dev.sh ui     dg dev (webserver + daemon: schedules and sensors tick) on http://127.0.0.1:3000
#   ./dev.sh check  dg check defs (what CI checks too) and ruff
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

case "${1:-}" in
  setup) setup ;;
  main)
    setup
    partition="${2:-$(date -u +%F)}"
    dg launch --job main --partition "$partition" -c pipelines/embedded.yaml -c pipelines/console.yaml
    .venv/bin/python -m crawl2serve.serving demo
    hour="$(date -u +%Y-%m-%d-%H:00)"
    dg launch --job monitoring --partition "$hour" -c pipelines/console.yaml
    .venv/bin/python -m crawl2serve.serving status
    root="${CRAWL2SERVE_DATA_ROOT:-data}"
    cat <<EOT

Done. What is running and where to look:
  gateway (OpenAI API)  http://127.0.0.1:8700/v1   stop it and the engine: .venv/bin/python -m crawl2serve.serving stop
  an API key            .venv/bin/python -m crawl2serve.serving keys add --keys-file $root/sglang_deployment/_/api_keys.json --tenant me --tier pro
  Dagster UI            ./dev.sh ui                                   then http://127.0.0.1:3000
  MLflow UI             .venv/bin/mlflow ui --backend-store-uri sqlite:///$root/mlflow/mlflow.db   then http://127.0.0.1:5000
  Feast                 ./dev.sh feast serve  (online features)  ·  ./dev.sh feast ui
  Prometheus metrics    http://127.0.0.1:8700/metrics
EOT
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
    exec dg dev --host 127.0.0.1 --port "${2:-3000}"
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
