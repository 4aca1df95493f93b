#!/bin/sh
# The stand-in cluster's registry: Debian's Distribution registry over TLS. On first start it makes a CA and a
# certificate for its address (REGISTRY_ADDRESS, an IP) in /pki, a volume, so a restart keeps both and the
# nodes' trust stays valid; tools/cluster.ts hands the CA to the nodes.
set -eu
: "${REGISTRY_ADDRESS:?}"
cd /pki
if [ ! -s registry.crt ]; then
  umask 077
  openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=flask-proxy-cluster CA" \
    -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey rsa:3072 -nodes -subj "/CN=${REGISTRY_ADDRESS}" -keyout registry.key -out registry.csr 2>/dev/null
  printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$REGISTRY_ADDRESS" > registry.ext
  openssl x509 -req -in registry.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -extfile registry.ext \
    -out registry.crt.tmp 2>/dev/null
  chmod 644 ca.crt registry.crt.tmp
  mv registry.crt.tmp registry.crt
fi
exec docker-registry serve /etc/docker/registry/cluster.yml
