#!/usr/bin/env bash
# The test command: unit tests, then the live suite on a real Docker Engine, which this script installs and
# starts when needed, with stand-ins for the public images (no registry is reachable on these machines).
# Arguments go to jest: `npm test -- tests/e2e/dev.test.ts`, `npm run e2e` (= --selectProjects e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x node_modules/.bin/jest ] || npm ci --no-audit --no-fund
export TS_NODE_TRANSPILE_ONLY=1  # helper scripts only; jest type-checks the tests itself

SKIP_STANDINS=1 bash scripts/setup-engine.sh
mapfile -t tags < <(node -r ts-node/register scripts/standin-tags.ts)
bash scripts/build-standins.sh "${tags[@]}"

cleanup() { node -r ts-node/register scripts/cleanup.ts || true; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
cleanup  # leftovers of an interrupted run
npx tsc --noEmit -p .
command -v pulumi >/dev/null || echo "NOTE: no pulumi CLI on PATH: the Automation API test (real pulumi preview/up/destroy) will be reported as skipped."
npx jest --runInBand "$@"
