#!/bin/sh
# The certificate agent beside nginx: obtains the certificate with lego over HTTP-01 (challenge files written
# into a webroot volume nginx serves at /.well-known/acme-challenge/), installs fullchain + key into the volume
# nginx reads, renews by itself with a third of the lifetime left (half for certificates of 10 days or less,
# as lego and certbot do), retries with exponential backoff while the installed certificate stays, and reloads
# nginx by SIGHUP to its master (the container shares nginx's PID namespace: no docker socket). nginx's master
# tests the new configuration on SIGHUP and keeps running with the old one if it fails.
#
# Subcommands: seed (a placeholder certificate if none is installed, so nginx can start before the first
# issuance), run (the loop), health (exit 0 when the last attempt succeeded and a CA's certificate is loaded).
#
# Env: ACME_SERVER (directory URL), ACME_EMAIL, ACME_DOMAINS (comma-separated; the first names the files),
# ACME_CA_FILE or ACME_CA_PEM (a CA to trust for the ACME server's TLS: a path, or the PEM itself), ACME_PROFILE (needs a lego that has --profile),
# ACME_KEY_TYPE (ec256), ACME_CHECK_SECONDS (3600: longest sleep between checks), ACME_BACKOFF_MIN_SECONDS
# (30), ACME_BACKOFF_MAX_SECONDS (3600). Paths: /data (lego's account and certificates: keep this volume),
# /certs (what nginx reads), /webroot.
set -u

DATA=${ACME_DATA_DIR:-/data}
OUT=${ACME_CERTS_DIR:-/certs}
WEBROOT=${ACME_WEBROOT:-/webroot}
CERT_FILE=fullchain.pem
KEY_FILE=privkey.pem
STATUS="$DATA/agent-status"
# Per container (tmpfs): a new agent reloads nginx once, whatever an earlier one did.
LOADED="${ACME_RUN_DIR:-/tmp}/agent-loaded"
LEGO=${LEGO:-$(command -v lego || echo /lego)}

log() { echo "[cert-agent] $(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; }

primary() { echo "${ACME_DOMAINS%%,*}"; }
stored_cert() { echo "$DATA/certificates/$(primary).crt"; }
stored_key() { echo "$DATA/certificates/$(primary).key"; }

# Seconds since the epoch of an openssl date ("Dec  1 13:42:11 2026 GMT"): GNU date, else busybox's -D.
to_epoch() { date -u -d "$1" +%s 2>/dev/null || date -u -D '%b %e %H:%M:%S %Y GMT' -d "$1" +%s; }
cert_date() { to_epoch "$(openssl x509 -noout "-$1" -in "$2" | cut -d= -f2-)"; }
fingerprint() { openssl x509 -noout -fingerprint -sha256 -in "$1" 2>/dev/null | cut -d= -f2; }

# When a certificate is due: a third of its lifetime before notAfter, half for 10 days or less.
due_at() {
  start=$(cert_date startdate "$1") end=$(cert_date enddate "$1")
  lifetime=$((end - start))
  if [ "$lifetime" -le 864000 ]; then echo $((end - lifetime / 2)); else echo $((end - lifetime / 3)); fi
}

lego_args() {
  set -- --server "$ACME_SERVER" --accept-tos --path "$DATA" --key-type "${ACME_KEY_TYPE:-ec256}" \
    --http --http.webroot "$WEBROOT"
  [ -n "${ACME_EMAIL:-}" ] && set -- "$@" --email "$ACME_EMAIL"
  old_ifs=$IFS IFS=,
  for d in $ACME_DOMAINS; do set -- "$@" --domains "$d"; done
  IFS=$old_ifs
  printf '%s\n' "$@"
}

# lego with the common flags, its output kept in $LAST_OUTPUT and logged; its exit status.
LAST_OUTPUT=""
lego_do() {
  tmp=$(mktemp)
  # shellcheck disable=SC2046 # one flag per line, none has a newline
  old_ifs=$IFS IFS='
'
  "$LEGO" $(lego_args) "$@" >"$tmp" 2>&1
  rc=$?
  IFS=$old_ifs
  sed 's/^/[lego] /' "$tmp"
  LAST_OUTPUT=$(grep -v '^$' "$tmp" | tail -n 3 | tr '\n' ' ')
  rm -f "$tmp"
  return $rc
}

# Copies src to dest atomically (a rename in dest's directory) with the given mode.
install_file() { # src dest mode
  cp "$1" "$2.next" && chmod "$3" "$2.next" && mv -f "$2.next" "$2"
}

# ACME_NGINX_PID: the master's PID where the PID namespace holds more than one nginx (a host, in tests).
nginx_master() {
  [ -n "${ACME_NGINX_PID:-}" ] && { echo "$ACME_NGINX_PID"; return 0; }
  for p in /proc/[0-9]*; do
    case "$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" in "nginx: master process"*) echo "${p#/proc/}"; return 0 ;; esac
  done
  return 1
}

# Installs lego's certificate for nginx unless it is there, and reloads nginx unless this agent already did.
install_and_reload() {
  cert=$(stored_cert) key=$(stored_key)
  fp=$(fingerprint "$cert")
  [ -n "$fp" ] || { LAST_OUTPUT="no readable certificate at $cert"; return 1; }
  if [ "$fp" != "$(fingerprint "$OUT/$CERT_FILE")" ]; then
    # A key that does not match would make nginx refuse the reload (and the next start): check first.
    if [ "$(openssl x509 -noout -pubkey -in "$cert" | openssl sha256)" != "$(openssl pkey -pubout -in "$key" | openssl sha256)" ]; then
      LAST_OUTPUT="the key in $key does not match the certificate $cert"
      return 1
    fi
    rm -f "$LOADED"
    install_file "$key" "$OUT/$KEY_FILE" 600 && install_file "$cert" "$OUT/$CERT_FILE" 644 \
      || { LAST_OUTPUT="writing into $OUT failed"; return 1; }
  fi
  [ "$fp" = "$(cat "$LOADED" 2>/dev/null)" ] && return 0
  pid=$(nginx_master) || { LAST_OUTPUT="no nginx master process in this PID namespace (run with pidMode container:<nginx>)"; return 1; }
  kill -HUP "$pid" || { LAST_OUTPUT="SIGHUP to nginx master (pid $pid) failed"; return 1; }
  echo "$fp" >"$LOADED"
  log "installed the certificate valid until $(openssl x509 -noout -enddate -in "$cert" | cut -d= -f2) (sha256 $fp); reloaded nginx (pid $pid)"
}

seed() {
  mkdir -p "$OUT"
  [ -s "$OUT/$CERT_FILE" ] && [ -s "$OUT/$KEY_FILE" ] && return 0
  log "no certificate in $OUT: a self-signed placeholder for $(primary) until the CA's arrives"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$(primary) (placeholder)" \
    -keyout "$OUT/$KEY_FILE.next" -out "$OUT/$CERT_FILE.next" 2>/dev/null || { log "making the placeholder failed"; exit 1; }
  chmod 600 "$OUT/$KEY_FILE.next"
  mv -f "$OUT/$KEY_FILE.next" "$OUT/$KEY_FILE" && mv -f "$OUT/$CERT_FILE.next" "$OUT/$CERT_FILE"
}

health() {
  [ -s "$LOADED" ] || { echo "no certificate from the CA loaded yet: $(cat "$STATUS" 2>/dev/null)"; exit 1; }
  case "$(cat "$STATUS" 2>/dev/null)" in
    ok*) cat "$STATUS"; exit 0 ;;
    *) cat "$STATUS" 2>/dev/null || echo "no status yet"; exit 1 ;;
  esac
}

run() {
  : "${ACME_SERVER:?ACME_SERVER (the ACME directory URL) is required}" "${ACME_DOMAINS:?ACME_DOMAINS is required}"
  if [ -n "${ACME_CA_PEM:-}" ]; then
    printf '%s\n' "$ACME_CA_PEM" >/tmp/acme-ca.pem
    ACME_CA_FILE=/tmp/acme-ca.pem
  fi
  [ -n "${ACME_CA_FILE:-}" ] && export LEGO_CA_CERTIFICATES="$ACME_CA_FILE"
  if [ -n "${ACME_PROFILE:-}" ]; then
    "$LEGO" run --help 2>/dev/null | grep -q -- '--profile' \
      || { log "ACME_PROFILE=$ACME_PROFILE: this lego ($("$LEGO" --version)) cannot ask for a profile"; exit 2; }
  fi
  check=${ACME_CHECK_SECONDS:-3600} bmin=${ACME_BACKOFF_MIN_SECONDS:-30} bmax=${ACME_BACKOFF_MAX_SECONDS:-3600}
  backoff=$bmin failures=0 since=""
  mkdir -p "$WEBROOT" "$OUT"
  seed
  # The status is in the kept volume: an earlier agent's last word is not this one's.
  echo "starting: the first attempt is under way" >"$STATUS"
  trap 'log "stopping"; exit 0' TERM INT
  while :; do
    profile=""
    [ -n "${ACME_PROFILE:-}" ] && profile="--profile=$ACME_PROFILE"
    ok=true
    if [ ! -s "$(stored_cert)" ]; then
      log "obtaining a certificate for $ACME_DOMAINS from $ACME_SERVER"
      # shellcheck disable=SC2086 # empty or one word
      lego_do run $profile || ok=false
    elif [ "$(date +%s)" -ge "$(due_at "$(stored_cert)")" ]; then
      log "renewing the certificate for $ACME_DOMAINS (valid until $(openssl x509 -noout -enddate -in "$(stored_cert)" | cut -d= -f2))"
      # --days: renew now (this loop decides when); no random sleep: one agent per stack, not a fleet's cron.
      # shellcheck disable=SC2086
      lego_do renew --days 36500 --no-random-sleep $profile || ok=false
    fi
    $ok && { install_and_reload || ok=false; }
    now=$(date +%s)
    if $ok; then
      failures=0 backoff=$bmin since=""
      due=$(due_at "$(stored_cert)")
      echo "ok: certificate valid until $(openssl x509 -noout -enddate -in "$(stored_cert)" | cut -d= -f2), renewal due in $((due - now)) s" >"$STATUS"
      wait_s=$((due - now))
      [ "$wait_s" -gt "$check" ] && wait_s=$check
      [ "$wait_s" -lt 1 ] && wait_s=1
    else
      failures=$((failures + 1))
      [ -n "$since" ] || since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
      valid="none yet"
      [ -s "$(stored_cert)" ] && valid="the installed one, valid until $(openssl x509 -noout -enddate -in "$(stored_cert)" | cut -d= -f2)"
      echo "failing since $since ($failures attempts); certificate: $valid; last error: $LAST_OUTPUT" >"$STATUS"
      log "attempt $failures failed, next in $backoff s (certificate: $valid): $LAST_OUTPUT"
      wait_s=$backoff
      backoff=$((backoff * 2))
      [ "$backoff" -gt "$bmax" ] && backoff=$bmax
    fi
    # In the background, so SIGTERM (docker stop) is handled at once.
    sleep "$wait_s" &
    wait $!
  done
}

case "${1:-run}" in
  seed) seed ;;
  run) run ;;
  health) health ;;
  *) echo "usage: $0 seed|run|health" >&2; exit 2 ;;
esac
