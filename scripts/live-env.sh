# Sourced by test.sh and bench.sh: dependencies, a running Docker Engine with stand-ins for every public
# image the stacks name, and removal of everything the live runs label, now and when the caller exits.
[ -x node_modules/.bin/jest ] || npm ci --no-audit --no-fund
export TS_NODE_TRANSPILE_ONLY=1  # helper scripts only; jest type-checks the tests itself

bash scripts/setup-engine.sh  # the engine, and stand-ins for the images the stacks name

cleanup() { node -r ts-node/register harness/cleanup.ts || true; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
cleanup  # leftovers of an interrupted run
