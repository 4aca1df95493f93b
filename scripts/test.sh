#!/usr/bin/env bash
# The test command: unit tests, then the live suite on a real Docker Engine, which this script installs and
# starts when needed, with stand-ins for the public images (no registry is reachable on these machines).
# Arguments go to jest: `npm test -- tests/e2e/dev.test.ts`, `npm run e2e` (= --selectProjects e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/live-env.sh
npx tsc --noEmit -p .
command -v pulumi >/dev/null || echo "NOTE: no pulumi CLI on PATH: the Automation API test (real pulumi preview/up/destroy) will be reported as skipped."
npx jest --runInBand "$@"
