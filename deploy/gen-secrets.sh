#!/usr/bin/env bash
# Makes the files nvmirror's Secrets are generated from (docs/install.md):
# a CA, the provisioner's and the agents' server certificates signed by it,
# and the two bearer tokens. Keep DIR out of git; the CA key is needed
# again only to issue new certificates.
#
#   deploy/gen-secrets.sh DIR [NAMESPACE]
#
# NAMESPACE (default nvmirror) only adds the provisioner Service's DNS names
# to its certificate; the driver dials the short name "nvmirror-provisioner".
set -euo pipefail

dir=${1:?usage: $0 DIR [NAMESPACE]}
ns=${2:-nvmirror}
days_ca=3650
days_cert=825
command -v openssl >/dev/null || { echo "openssl missing: apt-get install -y openssl" >&2; exit 1; }

mkdir -p "$dir"
cd "$dir"
for f in ca.crt ca.key provisioner.crt provisioner.key target.crt target.key api-token agent-token; do
  if [ -e "$f" ]; then
    echo "$dir/$f exists: refusing to overwrite (remove the directory's files to start over)" >&2
    exit 1
  fi
done
umask 077

openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -keyout ca.key -out ca.crt -days "$days_ca" -subj "/CN=nvmirror CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# cert NAME CN SAN: a server certificate signed by the CA.
cert() {
  local name=$1 cn=$2 san=$3
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$name.key" -out "$name.csr" -subj "/CN=$cn" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n' "$san" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out "$name.crt" -days "$days_cert" -extfile "$name.ext" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}
cert provisioner nvmirror-provisioner \
  "DNS:nvmirror-provisioner,DNS:nvmirror-provisioner.$ns,DNS:nvmirror-provisioner.$ns.svc,DNS:nvmirror-provisioner.$ns.svc.cluster.local,DNS:localhost,IP:127.0.0.1"
# One certificate for every agent: the provisioner verifies the name
# "nvmirror-target" (--agent-server-name), whatever address it dials.
cert target nvmirror-target "DNS:nvmirror-target"
rm -f ca.srl

openssl rand -hex 32 > api-token
openssl rand -hex 32 > agent-token
chmod 600 ./*
echo "Wrote CA, certificates and tokens to $dir (mode 600); keep it out of git."
