#!/usr/bin/env bash
# npm run bench: sets up the engine and stand-ins like the tests, then measures the tutorial's topology
# and our stacks side by side (bench/bench.test.ts). BENCH_CONNECTIONS, BENCH_DURATION, BENCH_WARMUP,
# BENCH_ROUNDS and BENCH_SCALING tune it.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "[bench] wrk is not installed and installing it needs root" >&2; exit 1; }
  echo "[bench] installing wrk from Debian" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
fi
source scripts/live-env.sh
npx jest -c bench/jest.config.js --runInBand "$@"
