#!/usr/bin/env bash
# npm run bench: sets up the engine and stand-ins like the tests, then measures the tutorial's topology
# and our stacks side by side (bench/bench.test.ts). BENCH_CONNECTIONS, BENCH_DURATION, BENCH_WARMUP tune it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x node_modules/.bin/jest ] || npm ci --no-audit --no-fund
export TS_NODE_TRANSPILE_ONLY=1

SKIP_STANDINS=1 bash scripts/setup-engine.sh
if ! command -v wrk >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "[bench] wrk is not installed and installing it needs root" >&2; exit 1; }
  echo "[bench] installing wrk from Debian" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
fi
mapfile -t tags < <(node -r ts-node/register scripts/standin-tags.ts)
bash scripts/build-standins.sh "${tags[@]}"

cleanup() { node -r ts-node/register scripts/cleanup.ts || true; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
cleanup
npx jest -c bench/jest.config.js --runInBand "$@"
