#!/bin/sh
# The certificate agent beside nginx: obtains the certificate with certbot over HTTP-01 (challenge files
# written into a webroot volume nginx serves at /.well-known/acme-challenge/), or with tls: internal signs it
# with the stack's CA (openssl, the CA in the data volume), installs fullchain + key into the volume nginx
# reads, renews by itself, retries with exponential backoff while the installed certificate stays, and reloads
# nginx by SIGHUP to its master (the container shares nginx's PID namespace: no docker socket). nginx's master
# tests the new configuration on SIGHUP and keeps running with the old one if it fails.
#
# When to renew: the internal issuer with a third of the lifetime left (half for certificates of 10 days or
# less, as certbot does by default). An ACME certificate is checked with `certbot renew` at every wake-up (at
# start, then at least every ACME_CHECK_SECONDS): certbot renews when the CA's ACME Renewal Information (ARI)
# window says so, or else by the same lifetime rule.
#
# Subcommands: seed (a placeholder certificate if none is installed, so nginx can start before the first
# issuance), run (the loop), health (exit 0 when the last attempt succeeded and a CA's certificate is loaded).
#
# Env: ACME_SERVER (directory URL), ACME_EMAIL, ACME_DOMAINS (comma-separated; the first names the
# certificate), ACME_CA_FILE or ACME_CA_PEM (a CA to trust for the ACME server's TLS: a path, or the PEM
# itself), ACME_PROFILE (an ACME profile to prefer, e.g. shortlived; the CA's default if it has none such),
# CERT_ISSUER (acme, or internal: INTERNAL_LIFETIME_SECONDS, INTERNAL_SANS such as "DNS:localhost,IP:127.0.0.1",
# the CA as ca.crt and ca.key in /data/internal-ca), ACME_CHECK_SECONDS (3600: longest sleep between checks),
# ACME_BACKOFF_MIN_SECONDS (30), ACME_BACKOFF_MAX_SECONDS (3600). Paths: /data (certbot's account and
# certificates: keep this volume), /certs (what nginx reads), /webroot.
set -u

DATA=${ACME_DATA_DIR:-/data}
OUT=${ACME_CERTS_DIR:-/certs}
WEBROOT=${ACME_WEBROOT:-/webroot}
CERT_FILE=fullchain.pem
KEY_FILE=privkey.pem
STATUS="$DATA/agent-status"
# Per container (tmpfs): a new agent reloads nginx once, whatever an earlier one did. What nginx took at this
# agent's last reload: the certificate's fingerprint, then its notAfter.
LOADED="${ACME_RUN_DIR:-/tmp}/agent-loaded"
CERTBOT=${CERTBOT:-$(command -v certbot || echo /usr/local/bin/certbot)}
# certbot's configuration: account, lineages (live/<name>/), renewal settings.
CERTBOT_DIR="$DATA/certbot"
ISSUER=${CERT_ISSUER:-acme}
INTERNAL_CA="$DATA/internal-ca"
# A leaf's notBefore, this far back: a client whose clock is a little behind still takes it.
BACKDATE_S=60

log() { echo "[cert-agent] $(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; }

primary() { echo "${ACME_DOMAINS%%,*}"; }
# Where the issuer keeps the certificate and key: certbot's lineage, or the stack CA's leaf.
stored_cert() { [ "$ISSUER" = acme ] && echo "$CERTBOT_DIR/live/$(primary)/fullchain.pem" || echo "$DATA/certificates/$(primary).crt"; }
stored_key() { [ "$ISSUER" = acme ] && echo "$CERTBOT_DIR/live/$(primary)/privkey.pem" || echo "$DATA/certificates/$(primary).key"; }

# Seconds since the epoch of an openssl date ("Dec  1 13:42:11 2026 GMT"): GNU date, else busybox's -D.
to_epoch() { date -u -d "$1" +%s 2>/dev/null || date -u -D '%b %e %H:%M:%S %Y GMT' -d "$1" +%s; }
cert_date() { to_epoch "$(openssl x509 -noout "-$1" -in "$2" | cut -d= -f2-)"; }
fingerprint() { openssl x509 -noout -fingerprint -sha256 -in "$1" 2>/dev/null | cut -d= -f2; }
# A certificate's notAfter as openssl prints it ("Dec  1 13:42:11 2026 GMT").
not_after() { openssl x509 -noout -enddate -in "$1" | cut -d= -f2; }

# When a certificate is due: a third of its lifetime before notAfter, half for 10 days or less.
due_at() {
  start=$(cert_date startdate "$1") end=$(cert_date enddate "$1")
  lifetime=$((end - start))
  if [ "$lifetime" -le 864000 ]; then echo $((end - lifetime / 2)); else echo $((end - lifetime / 3)); fi
}

# The last 3 non-empty lines of a log, on one line: what a failed attempt reports.
last_lines() { grep -v '^$' "$1" | tail -n 3 | tr '\n' ' '; }

# What certbot says went wrong, on one line: the CA's problem (Type and Detail per domain), a renewal's
# error, or an unexpected one; else its last lines.
certbot_error() {
  said=$(awk '/^ *(Domain|Type|Detail): / || /with error: / { sub(/^ +/, ""); print; next }
    unexpected { print; unexpected = 0 } /^An unexpected error occurred:/ { print; unexpected = 1 }' "$1" | tr -s '\n ' '  ')
  [ -n "$said" ] && echo "$said" || last_lines "$1"
}

# certbot with the agent's folders (certbot's logs and locks in /tmp: the root is read-only), its output
# kept in $CERTBOT_OUTPUT, its error in $LAST_OUTPUT; its exit status.
LAST_OUTPUT=""
CERTBOT_OUTPUT=""
certbot_do() {
  tmp=$(mktemp) sub=$1
  shift
  "$CERTBOT" "$sub" --non-interactive --config-dir "$CERTBOT_DIR" --work-dir /tmp/certbot/work \
    --logs-dir /tmp/certbot/logs --max-log-backups 2 --server "$ACME_SERVER" ${ACME_PROFILE:+--preferred-profile "$ACME_PROFILE"} \
    "$@" >"$tmp" 2>&1
  rc=$?
  CERTBOT_OUTPUT=$(sed 's/^/[certbot] /' "$tmp")
  LAST_OUTPUT=$(certbot_error "$tmp")
  rm -f "$tmp"
  return $rc
}

# The first certificate: a new lineage named after the first domain.
certbot_obtain() {
  set -- certonly --cert-name "$(primary)" --webroot --webroot-path "$WEBROOT" --agree-tos --key-type ecdsa
  if [ -n "${ACME_EMAIL:-}" ]; then set -- "$@" --email "$ACME_EMAIL" --no-eff-email; else set -- "$@" --register-unsafely-without-email; fi
  old_ifs=$IFS IFS=,
  for d in $ACME_DOMAINS; do set -- "$@" --domain "$d"; done
  IFS=$old_ifs
  certbot_do "$@"
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

# The workers of nginx's master $1 that accept new connections: one told to quit retitles itself "is
# shutting down" as it closes its listeners.
accepting_workers() {
  for p in /proc/[0-9]*; do
    case "$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" in
      "nginx: worker process is shutting down"*) ;;
      "nginx: worker process"*) [ "$(awk '/^PPid:/ { print $2 }' "$p/status" 2>/dev/null)" = "$1" ] && echo "${p#/proc/}" ;;
    esac
  done
}

# After SIGHUP, nginx starts new workers and leaves the old ones accepting for 100 ms more: the new
# certificate serves on every new connection once none of the old workers accepts. A master that refused the
# new configuration keeps its old workers; that is a failure here, with nginx's error in its own log.
await_reload() {
  # shellcheck disable=SC2086 # one PID a line, onto one line
  old=$(echo $1) deadline=$(($(date +%s) + 10))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    now=$(accepting_workers "$2")
    stale=false
    for w in $now; do case " $old " in *" $w "*) stale=true ;; esac; done
    [ -n "$now" ] && ! $stale && return 0
    sleep 0.1
  done
  LAST_OUTPUT="nginx (pid $2) did not reload in 10 s: its workers $old still accept (nginx's log says why)"
  return 1
}

# Seconds since the epoch as openssl's -startdate/-enddate take them.
asn1_time() { date -u -d "@$1" +%Y%m%d%H%M%SZ; }

# Whether the stored leaf is one this issuer would sign now: from the stack's CA (a new CA after a destroy and
# `up` is a new one), with the lifetime asked for (a changed internalLeafLifetime takes effect at its `up`).
internal_current() {
  cert=$(stored_cert)
  [ -s "$cert" ] || return 1
  openssl verify -CAfile "$INTERNAL_CA/ca.crt" "$cert" >/dev/null 2>&1 || return 1
  [ $(($(cert_date enddate "$cert") - $(cert_date startdate "$cert"))) -eq $((INTERNAL_LIFETIME_SECONDS + BACKDATE_S)) ]
}

# Signs a new leaf (a new P-256 key) for ACME_DOMAINS and INTERNAL_SANS with the stack's CA, stored in the
# data volume as certbot's lineage is, so installing and renewing are the same for both issuers. Dates to the second:
# `openssl ca` takes them (`x509 -days` counts whole days only).
internal_issue() {
  [ -s "$INTERNAL_CA/ca.crt" ] && [ -s "$INTERNAL_CA/ca.key" ] \
    || { LAST_OUTPUT="no CA in $INTERNAL_CA (ca.crt and ca.key are written by pulumi up)"; return 1; }
  work=$(mktemp -d) now=$(date +%s)
  mkdir -p "$DATA/certificates"
  : >"$work/index.txt"
  cat >"$work/ca.cnf" <<EOF
[ca]
default_ca = stack
[stack]
database = $work/index.txt
new_certs_dir = $work
rand_serial = yes
default_md = sha256
policy = any
unique_subject = no
x509_extensions = leaf
[any]
commonName = supplied
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = $INTERNAL_SANS
EOF
  if openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$(primary)" \
    -keyout "$work/leaf.key" -out "$work/leaf.csr" >"$work/log" 2>&1 \
    && openssl ca -batch -notext -config "$work/ca.cnf" -cert "$INTERNAL_CA/ca.crt" \
      -keyfile "$INTERNAL_CA/ca.key" -in "$work/leaf.csr" -out "$work/leaf.crt" \
      -startdate "$(asn1_time $((now - BACKDATE_S)))" -enddate "$(asn1_time $((now + INTERNAL_LIFETIME_SECONDS)))" \
      >>"$work/log" 2>&1; then
    install_file "$work/leaf.key" "$(stored_key)" 600 && install_file "$work/leaf.crt" "$(stored_cert)" 644
    rc=$?
  else
    rc=1
  fi
  LAST_OUTPUT=$(last_lines "$work/log")
  [ "$rc" -eq 0 ] || LAST_OUTPUT="signing the leaf with the stack's CA failed: $LAST_OUTPUT"
  rm -rf "$work"
  return "$rc"
}

# Installs the stored certificate (certbot's, or the stack CA's) for nginx unless it is there; its fingerprint in $fp.
install_stored() {
  cert=$(stored_cert) key=$(stored_key)
  fp=$(fingerprint "$cert")
  [ -n "$fp" ] || { LAST_OUTPUT="no readable certificate at $cert"; return 1; }
  if [ "$fp" != "$(fingerprint "$OUT/$CERT_FILE")" ]; then
    # A key that does not match would make nginx refuse the reload (and the next start): check first.
    if [ "$(openssl x509 -noout -pubkey -in "$cert" | openssl sha256)" != "$(openssl pkey -pubout -in "$key" | openssl sha256)" ]; then
      LAST_OUTPUT="the key in $key does not match the certificate $cert"
      return 1
    fi
    install_file "$key" "$OUT/$KEY_FILE" 600 && install_file "$cert" "$OUT/$CERT_FILE" 644 \
      || { LAST_OUTPUT="writing into $OUT failed"; return 1; }
  fi
}

# Installs the stored certificate, and reloads nginx unless this agent already did.
install_and_reload() {
  install_stored || return 1
  [ "$fp" = "$(head -n 1 "$LOADED" 2>/dev/null)" ] && return 0
  pid=$(nginx_master) || { LAST_OUTPUT="no nginx master process in this PID namespace (run with pidMode container:<nginx>)"; return 1; }
  workers=$(accepting_workers "$pid")
  kill -HUP "$pid" || { LAST_OUTPUT="SIGHUP to nginx master (pid $pid) failed"; return 1; }
  await_reload "$workers" "$pid" || return 1
  printf '%s\n%s\n' "$fp" "$(not_after "$cert")" >"$LOADED"
  log "installed the certificate valid until $(not_after "$cert") (sha256 $fp); reloaded nginx (pid $pid)"
}

seed() {
  mkdir -p "$OUT"
  [ -s "$OUT/$CERT_FILE" ] && [ -s "$OUT/$KEY_FILE" ] && return 0
  # The stack's CA is at hand: nginx starts with its leaf, never with a placeholder (a new nginx that takes
  # over from one serving the same CA's leaf, as after a switch of the agent's volumes, fails no client).
  if [ "$ISSUER" = internal ] && [ -s "$INTERNAL_CA/ca.crt" ]; then
    if { internal_current || internal_issue; } && install_stored; then
      log "installed a certificate for $(primary) from the stack's CA, valid until $(not_after "$OUT/$CERT_FILE")"
      return 0
    fi
    log "no certificate from the stack's CA ($LAST_OUTPUT): a placeholder instead"
  fi
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
  : "${ACME_DOMAINS:?ACME_DOMAINS is required}"
  case "$ISSUER" in
    acme) : "${ACME_SERVER:?ACME_SERVER (the ACME directory URL) is required}" ;;
    internal) : "${INTERNAL_LIFETIME_SECONDS:?INTERNAL_LIFETIME_SECONDS is required}" "${INTERNAL_SANS:?INTERNAL_SANS is required}" ;;
    *) log "CERT_ISSUER=$ISSUER: must be acme or internal"; exit 2 ;;
  esac
  if [ -n "${ACME_CA_PEM:-}" ]; then
    printf '%s\n' "$ACME_CA_PEM" >/tmp/acme-ca.pem
    ACME_CA_FILE=/tmp/acme-ca.pem
  fi
  # certbot (python-requests) trusts this bundle instead of the system's for the ACME server's TLS.
  [ -n "${ACME_CA_FILE:-}" ] && export REQUESTS_CA_BUNDLE="$ACME_CA_FILE"
  check=${ACME_CHECK_SECONDS:-3600} bmin=${ACME_BACKOFF_MIN_SECONDS:-30} bmax=${ACME_BACKOFF_MAX_SECONDS:-3600}
  backoff=$bmin failures=0 since=""
  mkdir -p "$WEBROOT" "$OUT"
  seed
  # The status is in the kept volume: an earlier agent's last word is not this one's.
  echo "starting: the first attempt is under way" >"$STATUS"
  trap 'log "stopping"; exit 0' TERM INT
  while :; do
    ok=true
    if [ "$ISSUER" = internal ]; then
      if ! internal_current; then
        log "issuing a certificate for $ACME_DOMAINS ($INTERNAL_SANS) from the stack's CA, valid for $INTERNAL_LIFETIME_SECONDS s"
        internal_issue || ok=false
      elif [ "$(date +%s)" -ge "$(due_at "$(stored_cert)")" ]; then
        log "renewing the certificate for $ACME_DOMAINS from the stack's CA (valid until $(not_after "$(stored_cert)"))"
        internal_issue || ok=false
      fi
    elif [ ! -s "$(stored_cert)" ]; then
      log "obtaining a certificate for $ACME_DOMAINS from $ACME_SERVER${ACME_PROFILE:+ (profile $ACME_PROFILE)}"
      certbot_obtain || ok=false
      echo "$CERTBOT_OUTPUT"
    else
      # certbot decides: the CA's renewal window (ARI) if it gives one, else the lifetime rule above.
      was=$(fingerprint "$(stored_cert)")
      due_by_lifetime=false
      if [ "$(date +%s)" -ge "$(due_at "$(stored_cert)")" ]; then
        due_by_lifetime=true
        log "renewing the certificate for $ACME_DOMAINS (valid until $(not_after "$(stored_cert)"))"
      fi
      # No random sleep: one agent per stack, not a fleet's cron.
      certbot_do renew --cert-name "$(primary)" --no-random-sleep-on-renew || ok=false
      if ! $ok || [ "$(fingerprint "$(stored_cert)")" != "$was" ]; then
        echo "$CERTBOT_OUTPUT"
        $ok && ! $due_by_lifetime && log "renewed the certificate for $ACME_DOMAINS before its lifetime said so: the CA's renewal information (ARI) asked for it"
      fi
    fi
    if $ok; then
      install_and_reload || ok=false
    elif [ ! -s "$LOADED" ] && [ "$ISSUER" = acme ] && [ -s "$(stored_cert)" ] \
      && [ "$(cert_date enddate "$(stored_cert)")" -gt "$(date +%s)" ]; then
      # The CA failed a renewal this agent is the first to try: what it issued before is still valid, and
      # loaded (a new nginx has it from the volume, but this agent has not seen it take it).
      ca_error=$LAST_OUTPUT
      if install_and_reload; then LAST_OUTPUT=$ca_error; else LAST_OUTPUT="$ca_error; loading the stored one failed too: $LAST_OUTPUT"; fi
    fi
    now=$(date +%s)
    if $ok; then
      failures=0 backoff=$bmin since=""
      due=$(due_at "$(stored_cert)")
      wait_s=$((due - now)) when="renewal due in $((due - now)) s"
      # Due by the lifetime, yet certbot kept it (the CA's window is later): ask again after a quarter of
      # what is left, not in a busy loop.
      if [ "$wait_s" -lt 1 ]; then
        wait_s=$(( ($(cert_date enddate "$(stored_cert)") - now) / 4 ))
        when="due by its lifetime, kept as the CA's renewal window (ARI) is later"
      fi
      [ "$wait_s" -gt "$check" ] && wait_s=$check
      [ "$wait_s" -lt 1 ] && wait_s=1
      echo "ok: certificate valid until $(not_after "$(stored_cert)"), $when; next check in $wait_s s" >"$STATUS"
    else
      failures=$((failures + 1))
      [ -n "$since" ] || since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
      # What nginx serves: a certificate from the CA only once this agent saw a reload take it.
      valid="none yet"
      [ -s "$(stored_cert)" ] && valid="none loaded yet, the stored one valid until $(not_after "$(stored_cert)")"
      [ -s "$LOADED" ] && valid="the installed one, valid until $(sed -n 2p "$LOADED")"
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
