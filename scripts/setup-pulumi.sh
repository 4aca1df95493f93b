#!/usr/bin/env bash
# npm run setup:pulumi — makes the Pulumi toolchain this project pins available in ~/.pulumi/bin (where the
# official installer puts it): the `pulumi` CLI, its Node.js language host, and the docker and random
# resource providers installed as plugins, each at the version package-lock.json pins.
#
# Order: a matching toolchain already there → the official installer, where get.pulumi.com answers → a
# build from the Go module proxy (the only route on machines that reach package registries alone).
# Idempotent: finished binaries are cached by version under $PULUMI_TOOLCHAIN_CACHE, so a second run
# takes seconds. Before building anything it asks the proxy for every module it needs, so a module the
# proxy does not serve fails the run in seconds, naming the module, instead of after a long build.
#
# Usage: setup-pulumi.sh [--cli-only]   (--cli-only: just the CLI, e.g. to check the Go route works)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup-pulumi] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
step_start=0
begin() { step_start=$SECONDS; log "$*"; }
done_step() { log "  done in $((SECONDS - step_start)) s"; }

cli_only=false
[ "${1:-}" = "--cli-only" ] && cli_only=true

PULUMI_HOME="${PULUMI_HOME:-$HOME/.pulumi}"
BIN="$PULUMI_HOME/bin"
CACHE="${PULUMI_TOOLCHAIN_CACHE:-$HOME/.cache/flask-proxy/pulumi-toolchain}"

# --- versions: what package-lock.json pins -----------------------------------------------------------------
[ -f package-lock.json ] || die "no package-lock.json in $(pwd)"
locked() { node -p "require('./package-lock.json').packages['node_modules/$1']?.version ?? ''"; }
PULUMI_VERSION="$(locked @pulumi/pulumi)"
DOCKER_VERSION="$(locked @pulumi/docker)"
RANDOM_VERSION="$(locked @pulumi/random)"
[ -n "$PULUMI_VERSION" ] && [ -n "$DOCKER_VERSION" ] && [ -n "$RANDOM_VERSION" ] \
  || die "package-lock.json does not pin @pulumi/pulumi, @pulumi/docker and @pulumi/random"
log "wanted: pulumi v$PULUMI_VERSION, pulumi-resource-docker v$DOCKER_VERSION, pulumi-resource-random v$RANDOM_VERSION"

export PATH="$BIN:$PATH" PULUMI_SKIP_UPDATE_CHECK=true

plugin_installed() { # kind name version
  [ -x "$PULUMI_HOME/plugins/$1-$2-v$3/pulumi-$1-$2" ]
}
cli_ready() {
  [ -x "$BIN/pulumi" ] && [ "$("$BIN/pulumi" version 2>/dev/null)" = "v$PULUMI_VERSION" ]
}
# pulumi-resource-pulumi-nodejs runs dynamic providers (infra/rollout.ts); releases ship it beside the CLI.
toolchain_ready() {
  cli_ready && [ -x "$BIN/pulumi-language-nodejs" ] && [ -x "$BIN/pulumi-resource-pulumi-nodejs" ] \
    && plugin_installed resource docker "$DOCKER_VERSION" && plugin_installed resource random "$RANDOM_VERSION"
}

# --- 1. already there ----------------------------------------------------------------------------------------
if toolchain_ready || { $cli_only && cli_ready; }; then
  log "ready: $("$BIN/pulumi" version) in $BIN (nothing to do)"
  exit 0
fi

# --- 2. the official installer -------------------------------------------------------------------------------
if curl -fsS --max-time 10 -o /dev/null https://get.pulumi.com/ 2>/dev/null; then
  begin "get.pulumi.com answers: official installer, pulumi v$PULUMI_VERSION"
  curl -fsSL --max-time 60 https://get.pulumi.com | sh -s -- --version "$PULUMI_VERSION" --install-root "$PULUMI_HOME" --no-edit-path >&2 \
    || die "the official installer failed (see above)"
  if ! $cli_only; then
    "$BIN/pulumi" plugin install resource docker "$DOCKER_VERSION" >&2
    "$BIN/pulumi" plugin install resource random "$RANDOM_VERSION" >&2
  fi
  done_step
  log "ready: $("$BIN/pulumi" version) in $BIN"
  exit 0
fi
log "get.pulumi.com does not answer: building from the Go module proxy"

# --- 3. a build from the Go module proxy ---------------------------------------------------------------------
# Modules and release facts (see ../shared/pulumi-toolchain.md in the steering repo, checked against the
# sources): `go install` refuses these modules because their go.mod files carry replace directives, so each
# is downloaded, copied out of the read-only module cache into the layout its repository has, and built
# there with its own go.mod/go.sum.
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
[ -x /usr/local/go/bin/go ] && export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || die "no Go toolchain on PATH; install Go 1.25 or later (https://go.dev/dl/) and run again"
go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
[ "$go_minor" -ge 25 ] 2>/dev/null || die "$(go env GOVERSION) is too old: the Pulumi modules need Go 1.25 or later"

SDK_MOD=github.com/pulumi/pulumi/sdk/v3
PKG_MOD=github.com/pulumi/pulumi/pkg/v3
LANG_MOD=github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3
DOCKER_ROOT=github.com/pulumi/pulumi-docker
DOCKER_MOD=github.com/pulumi/pulumi-docker/provider/v5
RANDOM_ROOT=github.com/pulumi/pulumi-random
RANDOM_MOD=github.com/pulumi/pulumi-random/provider/v4

# One field of `go mod download -json`'s answer (Dir, Error, Origin.Hash), or nothing.
field() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{let v;try{v=process.argv[1].split(".").reduce((o,k)=>o?.[k],JSON.parse(s))}catch{v=s}process.stdout.write(v??"")})' "$1"; }
# Prints the module's folder in the module cache; on failure prints the proxy's own words to stderr.
download() { # module@version
  local out err
  out="$(go mod download -json "$1" 2>&1)" || true
  err="$(printf '%s' "$out" | field Error)"
  if [ -n "$err" ]; then printf '%s\n' "$err" | sed -E 's/^.*server response: //' | tail -n 1 >&2; return 1; fi
  printf '%s' "$out" | field Dir
}
# The commit a module version was tagged at (the proxy's Origin record).
origin_commit() { { go mod download -json "$1" 2>/dev/null || true; } | field Origin.Hash; }

missing=()
need() { # label module@version → sets REPLY to the module's folder, or records why it cannot be had
  local why
  if REPLY="$(download "$2" 2>/tmp/setup-pulumi-why.$$)"; then return 0; fi
  why="$(cat /tmp/setup-pulumi-why.$$)"; rm -f /tmp/setup-pulumi-why.$$
  missing+=("$1: the Go module proxy does not serve $2 ($why)")
  REPLY=""
  return 1
}

begin "asking the Go module proxy ($(go env GOPROXY)) for every module the toolchain needs"
need "pulumi CLI" "$PKG_MOD@v$PULUMI_VERSION" && PKG_DIR="$REPLY"
need "pulumi SDK" "$SDK_MOD@v$PULUMI_VERSION" && SDK_DIR="$REPLY"
if ! $cli_only; then
  # The language host is a module of its own without tags: it is fetched at the commit the CLI's release
  # tag (pkg/vX.Y.Z) names, which differs from the SDK's release commit only in pkg/go.mod and go.sum.
  release_commit="$(origin_commit "$PKG_MOD@v$PULUMI_VERSION")"
  if [ -z "$release_commit" ]; then
    missing+=("pulumi-language-nodejs: the proxy names no commit for $PKG_MOD@v$PULUMI_VERSION")
  else
    need "pulumi-language-nodejs" "$LANG_MOD@$release_commit" || true
  fi
  # Neither provider module is tagged: the repository root's release tag names the commit to fetch.
  for p in docker random; do
    if [ $p = docker ]; then root=$DOCKER_ROOT mod=$DOCKER_MOD v=$DOCKER_VERSION; else root=$RANDOM_ROOT mod=$RANDOM_MOD v=$RANDOM_VERSION; fi
    commit="$(origin_commit "$root@v$v+incompatible")"
    if [ -z "$commit" ]; then
      why="$(download "$root@v$v+incompatible" 2>&1 >/dev/null || true)"
      missing+=("pulumi-resource-$p: the Go module proxy does not serve $root@v$v+incompatible, which names the release commit (${why:-no Origin record})")
      continue
    fi
    need "pulumi-resource-$p" "$mod@$commit" || true
  done
fi
done_step
if [ ${#missing[@]} -gt 0 ]; then
  log "cannot build the Pulumi toolchain here; what the Go module proxy refused:"
  for m in "${missing[@]}"; do log "  - $m"; done
  die "no toolchain installed. Install Pulumi v$PULUMI_VERSION with the official installer (https://www.pulumi.com/docs/install/) on a machine that reaches get.pulumi.com, or make the modules above reachable through GOPROXY, and run again."
fi

mkdir -p "$CACHE" "$BIN"
build_cli() {
  local out="$CACHE/pulumi-v$PULUMI_VERSION"
  if [ ! -x "$out" ]; then
    local src="$CACHE/src/pulumi-v$PULUMI_VERSION"
    begin "building pulumi v$PULUMI_VERSION (cold: downloads ~1,000 modules; the Go build cache makes it fast next time)"
    rm -rf "$src"; mkdir -p "$src"
    # pkg/go.mod replaces the SDK with ../sdk: lay the two out side by side, as in the repository.
    cp -r "$SDK_DIR" "$src/sdk"; cp -r "$PKG_DIR" "$src/pkg"; chmod -R u+w "$src"
    (cd "$src/pkg" && go build -trimpath -tags osusergo,grpcnotrace \
      -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
      -o "$out.tmp" ./cmd/pulumi) >"$CACHE/build-pulumi.log" 2>&1 \
      || { tail -n 30 "$CACHE/build-pulumi.log" >&2; die "go build of the pulumi CLI failed (log: $CACHE/build-pulumi.log)"; }
    mv "$out.tmp" "$out"; rm -rf "$src"
    done_step
  fi
  install -m 0755 "$out" "$BIN/pulumi"
  # The dynamic-provider launcher is a script in the SDK module, installed beside the CLI as releases do.
  install -m 0755 "$SDK_DIR/nodejs/dist/pulumi-resource-pulumi-nodejs" "$BIN/pulumi-resource-pulumi-nodejs"
  [ "$("$BIN/pulumi" version)" = "v$PULUMI_VERSION" ] || die "the built CLI reports $("$BIN/pulumi" version), not v$PULUMI_VERSION"
}
build_cli
if $cli_only; then
  log "ready: $("$BIN/pulumi" version) in $BIN (CLI only)"
  exit 0
fi
# Every module was served, so the remaining builds can proceed; they are not written yet because no
# machine here has had them to build from (see docs/testing.md, the toolchain).
die "the language host and provider modules were served, but this script does not build them yet"
