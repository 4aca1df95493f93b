#!/usr/bin/env bash
# Installs what the ACME live tests run, from the Go module proxy: Pebble (Let's Encrypt's ACME test server)
# and pebble-challtestsrv (its DNS answerer). The renewal agent's ACME client, certbot, comes from PyPI into
# its image (scripts/build-standins.sh certbot/certbot:v5.8.0). Idempotent: a binary already at its version is kept, so a warm run costs
# a few `go version -m` calls. Prints the directory the binaries are in (its last line of stdout).
# With `caddy`, Caddy 2 too: the peer `npm run bench -- --suites https` measures nginx's HTTPS beside.
# Usage: setup-acme.sh [caddy]    (env: ACME_TOOLS_DIR, default ~/.cache/flask-proxy/acme-tools; GO, default go)
set -euo pipefail
log() { printf '[setup-acme] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

PEBBLE_VERSION="v2.10.3"
CADDY_VERSION="v2.11.9"
DIR="${ACME_TOOLS_DIR:-$HOME/.cache/flask-proxy/acme-tools}"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[ -x "$GO" ] || die "no Go toolchain (looked for go on PATH and /usr/local/go/bin/go)"
mkdir -p "$DIR"

# The module version a binary was built from, as Go records it in the binary ("" if absent or unreadable).
built_version() { [ -x "$1" ] && "$GO" version -m "$1" 2>/dev/null | awk '$1 == "mod" { print $3; exit }' || true; }

install() { # binary package version
  local bin="$DIR/$1"
  if [ "$(built_version "$bin")" = "$3" ]; then log "$1 $3 present"; return 0; fi
  local start=$SECONDS
  log "go install $2@$3"
  # CGO off: static binaries, independent of the host's libc.
  GOBIN="$DIR" CGO_ENABLED=0 "$GO" install -trimpath -ldflags '-s -w' "$2@$3" \
    || die "go install $2@$3 failed (is the Go module proxy reachable? GOPROXY=$("$GO" env GOPROXY))"
  log "  $1 built in $((SECONDS - start)) s"
}

install pebble github.com/letsencrypt/pebble/v2/cmd/pebble "$PEBBLE_VERSION"
install pebble-challtestsrv github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv "$PEBBLE_VERSION"
for extra in "$@"; do
  case "$extra" in
    caddy) install caddy github.com/caddyserver/caddy/v2/cmd/caddy "$CADDY_VERSION" ;;
    *) die "unknown tool '$extra' (known: caddy)" ;;
  esac
done
log "ready in $DIR"
echo "$DIR"
