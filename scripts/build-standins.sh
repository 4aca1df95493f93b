#!/usr/bin/env bash
# Builds local stand-ins for the public images the stacks name, because no registry is reachable here.
# One Debian bookworm rootfs (nginx-light + python3-flask + gunicorn + python3-prometheus-client +
# prometheus-nginx-exporter) is imported once as a base; each requested tag is a commit of it that sets the
# entrypoint the official image would have.
# Usage: build-standins.sh [TAG ...]   (default: the tags the committed stacks use, from harness/standin-tags.ts)
# Tags already present are skipped, so a warm run costs a few docker API calls.
set -euo pipefail
log() { printf '[standins] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Bumped whenever the package list changes; a stand-in that needs the new packages and was made from an older
# base is made again (see current()).
BASE_TAG="standin/bookworm-base:2"
CACHE_DIR="${STANDIN_CACHE_DIR:-/var/cache/pulumi-nginx-flask-standin}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if [ $# -eq 0 ]; then
  mapfile -t stack_tags < <(cd "$(dirname "$0")/.." && TS_NODE_TRANSPILE_ONLY=1 node -r ts-node/register harness/standin-tags.ts)
  [ ${#stack_tags[@]} -gt 0 ] || die "harness/standin-tags.ts named no images (run npm ci first?)"
  set -- "${stack_tags[@]}"
fi

docker info >/dev/null 2>&1 || die "no Docker Engine answers; run scripts/setup-engine.sh first"

have() { docker image inspect "$1" >/dev/null 2>&1; }
# The base a stand-in was committed from (empty for stand-ins older than this label).
base_of() { docker image inspect -f '{{index .Config.Labels "org.example.standin-base"}}' "$1" 2>/dev/null || true; }
# Present and made from a base with what it needs: python (prometheus_client) and the exporter need base 2;
# an nginx stand-in from base 1 is the same nginx, and is kept, so stacks already running on it see no change.
current() {
  have "$1" || return 1
  case "${1%%:*}" in
    # The official images say their nginx version in NGINX_VERSION, which the conf renderer reads; a stand-in
    # tagged before it said so is tagged again.
    */nginx|nginx|*/nginx-unprivileged|nginx-unprivileged)
      docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$1" | grep -q '^NGINX_VERSION=' ;
      return ;;
  esac
  [ "$(base_of "$1")" = "$BASE_TAG" ]
}

build_base() {
  have "$BASE_TAG" && return 0
  [ "$(id -u)" = 0 ] || die "building the stand-in base needs root (debootstrap)"
  command -v debootstrap >/dev/null || die "debootstrap is not installed; run scripts/setup-engine.sh"
  local free_kb; mkdir -p "$CACHE_DIR"; free_kb=$(df -Pk "$CACHE_DIR" | awk 'NR==2{print $4}')
  [ "$free_kb" -gt 2000000 ] || die "need ~2 GB free under $CACHE_DIR, have $((free_kb/1024)) MB"
  local root="$CACHE_DIR/rootfs"
  rm -rf "$root"
  log "debootstrap bookworm into $root (about 2 minutes)"
  debootstrap --variant=minbase \
    --include=python3-flask,gunicorn,python3-prometheus-client,nginx-light,prometheus-nginx-exporter,python3-pip,python-is-python3,curl,ca-certificates \
    bookworm "$root" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$CACHE_DIR/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE_DIR/debootstrap.log)"; }
  # Make the rootfs behave like the official images: nginx reads conf.d/ only and logs to the container's
  # stdout/stderr; pip may install into the system interpreter (requirements already satisfied offline).
  rm -f "$root/etc/nginx/sites-enabled/default" "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
  ln -sf /dev/stdout "$root/var/log/nginx/access.log"
  ln -sf /dev/stderr "$root/var/log/nginx/error.log"
  # The official nginx image runs workers as user "nginx"; give the stand-in the same account.
  chroot "$root" useradd --system --no-create-home --shell /usr/sbin/nologin nginx
  sed -i 's/^user www-data;/user nginx;/' "$root/etc/nginx/nginx.conf"
  rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
  log "importing base image $BASE_TAG"
  tar -C "$root" -c . | docker import --change 'LABEL org.example.standin=true' - "$BASE_TAG" >/dev/null
  rm -rf "$root"
}

# certbot and its dependencies from PyPI, as wheels for the base's Python (Debian bookworm's 3.11), under
# $CACHE_DIR/certbot-<version> (installed by the host's pip: the base's own network is not needed).
certbot_wheels() {
  local version="$1" dir="$CACHE_DIR/certbot-$1"
  [ -d "$dir/certbot" ] && { echo "$dir"; return 0; }
  command -v pip3 >/dev/null || command -v pip >/dev/null || die "the certbot stand-in needs pip (PyPI's certbot $version)"
  rm -rf "$dir.partial"
  "$(command -v pip3 || command -v pip)" install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --target "$dir.partial" --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux2014_x86_64 "certbot==$version" "acme==$version" >&2 \
    || die "pip install certbot==$version failed (is PyPI reachable?)"
  rm -rf "$dir.partial/bin"
  mv "$dir.partial" "$dir"
  echo "$dir"
}

build_tag() {
  local tag="$1" repo="${1%%:*}" changes=() create=() cid version
  repo="${repo##*/}"
  case "$repo" in
    nginx|nginx-unprivileged)
      # commit has no STOPSIGNAL change; the committed image keeps the container's stop signal instead.
      create=(--stop-signal SIGQUIT)
      # As the official image's ENV NGINX_VERSION, but the version the stand-in really runs (Debian's).
      version="$(docker run --rm "$BASE_TAG" dpkg-query -W -f '${Version}' nginx)" || die "reading the stand-in's nginx version failed"
      changes=(--change 'EXPOSE 80' --change 'CMD ["nginx", "-g", "daemon off;"]' --change "ENV NGINX_VERSION=${version%%-*}") ;;
    python)
      changes=(--change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]') ;;
    certbot)
      # The official certbot/certbot image: certbot on PATH as entrypoint. Here PyPI's certbot (the tag's
      # version) on the base's Python, copied in below.
      certbot_dir="$(certbot_wheels "${1##*:v}")"
      changes=(--change 'ENTRYPOINT ["certbot"]' --change 'CMD []' --change 'ENV PYTHONDONTWRITEBYTECODE=1') ;;
    caddy)
      # The official caddy image: /usr/bin/caddy running the Caddyfile in /etc/caddy; here Caddy built from the
      # Go module proxy (the bench's HTTPS peer), copied in below.
      caddy_dir="$(bash "$(dirname "$0")/setup-acme.sh" caddy | tail -n 1)" || die "building caddy failed"
      changes=(--change 'CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]'
        --change 'WORKDIR /srv' --change 'EXPOSE 80 443') ;;
    nginx-prometheus-exporter)
      # The official image: the exporter as entrypoint, run as nobody, listening on 9113.
      changes=(--change 'ENTRYPOINT ["/usr/bin/prometheus-nginx-exporter"]' --change 'CMD []' --change 'USER 65534'
        --change 'EXPOSE 9113') ;;
    *) die "no stand-in recipe for image '$tag' (known: nginx*, python*, nginx-prometheus-exporter, certbot/certbot, caddy)" ;;
  esac
  log "tagging stand-in $tag"
  # A commit of the base with the official image's settings: no builder involved, so none of the
  # legacy builder's deprecation notices (the engine here has no buildx).
  cid="$(docker create "${create[@]}" "$BASE_TAG" /bin/true)" || die "creating a container from $BASE_TAG failed"
  if [ "$repo" = certbot ]; then
    printf '#!/bin/sh\nPYTHONPATH=/opt/certbot exec python3 -c "import sys; from certbot.main import main; sys.exit(main())" "$@"\n' \
      >"$CACHE_DIR/certbot-entry"
    chmod 755 "$CACHE_DIR/certbot-entry"
    { docker cp "$certbot_dir" "$cid:/opt/certbot" && docker cp "$CACHE_DIR/certbot-entry" "$cid:/usr/local/bin/certbot"; } >/dev/null \
      || { docker rm "$cid" >/dev/null; die "copying certbot into $tag failed"; }
  fi
  if [ "$repo" = caddy ]; then
    docker cp "$caddy_dir/caddy" "$cid:/usr/bin/caddy" >/dev/null || { docker rm "$cid" >/dev/null; die "copying caddy into $tag failed"; }
  fi
  docker commit "${changes[@]}" --change "LABEL org.example.standin-for=\"$tag\" org.example.standin-base=\"$BASE_TAG\"" \
    "$cid" "$tag" >/dev/null \
    || { docker rm "$cid" >/dev/null; die "committing stand-in $tag failed"; }
  docker rm "$cid" >/dev/null
}

todo=()
for tag in "$@"; do current "$tag" || todo+=("$tag"); done
if [ ${#todo[@]} -eq 0 ]; then log "all stand-ins present: $*"; exit 0; fi
build_base
for tag in "${todo[@]}"; do build_tag "$tag"; done
log "ready: $*"
