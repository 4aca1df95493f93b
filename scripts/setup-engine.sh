#!/usr/bin/env bash
# Idempotent: installs and starts a Docker Engine, then builds the offline stand-in images.
# Safe to run again; every step is skipped when already done.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
log() { printf '[setup-engine] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ensure_root_or_engine() {
  if docker info >/dev/null 2>&1; then return 0; fi
  [ "$(id -u)" = 0 ] || die "no Docker Engine answers and installing one needs root (run as root, or start dockerd yourself)"
}

install_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  # The metrics test runs a real Prometheus server (on 127.0.0.1, its own config and storage; not the service).
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
  # The remote-engine test: keys and certificates it makes, and ssh:// as the provider reaches it.
  command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  # The TLS test scans the HTTPS listener with testssl.sh (3.0.8; the package brings dnsutils and bsdextrautils).
  command -v testssl >/dev/null 2>&1 || missing+=(testssl.sh)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

start_engine() {
  docker info >/dev/null 2>&1 && return 0
  local dockerd_bin; dockerd_bin="$(command -v dockerd)" || die "dockerd not found after install"
  # CIS Docker Benchmark 2.16: no userland proxy. Connections to published ports on 127.0.0.1 (all of the
  # tests' and the benchmark's traffic) then take the kernel's NAT path, as connections from other hosts
  # always do, instead of a docker-proxy process copying every byte (measured here: ~40% of a core and
  # ~30% of prod's throughput). An /etc/docker/daemon.json that sets userland-proxy itself wins.
  local args=()
  grep -qs '"userland-proxy"' /etc/docker/daemon.json || args+=(--userland-proxy=false)
  log "starting dockerd ${args[*]} (log: /var/log/dockerd-project.log)"
  nohup "$dockerd_bin" "${args[@]}" >/var/log/dockerd-project.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { log "engine is up"; return 0; }
    sleep 1
  done
  tail -n 20 /var/log/dockerd-project.log >&2 || true
  die "dockerd did not answer within 60 s"
}

ensure_root_or_engine
if [ "$(id -u)" = 0 ]; then install_packages; fi
start_engine
bash "$here/build-standins.sh"
