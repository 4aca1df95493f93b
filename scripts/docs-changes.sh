#!/usr/bin/env bash
# npm run docs:changes: sets up the engine, stand-ins and toolchain like the tests, then regenerates the change
# tables in docs/configuration.md from real previews and measured updates (docgen/change-docs.ts; `-- --check`
# compares).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/live-env.sh
export PATH="${PULUMI_HOME:-$HOME/.pulumi}/bin:$PATH"
node -r ts-node/register docgen/change-docs.ts "$@"
