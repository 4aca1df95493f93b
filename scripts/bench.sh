#!/usr/bin/env bash
# npm run bench: sets up the engine and stand-ins like the tests, then runs bench/run.ts (flags go to it:
# npm run bench -- --rounds 4 --record).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v docker-compose >/dev/null || missing+=(docker-compose)  # the seed runs the tutorial's own tool
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "[bench] ${missing[*]} not installed and installing needs root" >&2; exit 1; }
  echo "[bench] installing ${missing[*]} from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${missing[@]}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi
source scripts/live-env.sh
node -r ts-node/register bench/run.ts "$@"
