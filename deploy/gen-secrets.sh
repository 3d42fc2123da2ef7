#!/usr/bin/env bash
# Makes the certificates nvmirror's processes identify themselves with
# (docs/authentication.md, docs/install.md): a CA, and one certificate per
# caller and server, each naming what it is. Keep DIR out of git; the CA key
# is needed again only to issue more certificates.
#
#   deploy/gen-secrets.sh DIR [NAMESPACE] [--nodes a,b,...] [--storage-nodes x,y,...] [--admin NAME] [--all-in-one NODE]
#
#   DIR/ca.crt, ca.key                 the CA (10 years)
#   DIR/provisioner.crt, .key          the provisioner's server certificate
#   DIR/provisioner-client.crt, .key   the provisioner as the agents' client  (O=provisioner)
#   DIR/controller.crt, .key           the CSI controller                     (O=controller)
#   DIR/admin.crt, .key                an administrator's nvmirrorctl         (O=admin, CN=NAME)
#   DIR/nodes/NODE/tls.crt, tls.key    each compute node's plugin             (O=node, CN=NODE)
#   DIR/storage-nodes/SN/tls.crt, .key each storage node's agent (server)     (O=storage-node, CN=SN, DNS:SN)
#   DIR/all-in-one/NODE/tls.crt, .key  nvmirror-csi --mode=all on NODE        (O=controller and O=node, CN=NODE)
#
# NODE is the Kubernetes node name (what kubelet calls the node; the node
# plugin's --node-name); SN is the storage node's name in the provisioner's
# storage node list (the agent's --node-name, its Kubernetes node name in
# deploy/). Certificates last 825 days.
#
# Running it again keeps every file that exists and issues only the missing
# ones with the same CA: to add nodes, name them; to renew one certificate,
# delete its files and run again. NAMESPACE (default nvmirror) only adds the
# provisioner Service's DNS names to its certificate.
set -euo pipefail

usage() { echo "usage: $0 DIR [NAMESPACE] [--nodes a,b] [--storage-nodes x,y] [--admin NAME] [--all-in-one NODE]" >&2; exit 2; }
dir=""; ns=""; nodes=""; storage_nodes=""; admin="admin"; all_in_one=""
while [ $# -gt 0 ]; do
  case $1 in
    --nodes) nodes=${2:?--nodes needs a comma-separated list}; shift 2 ;;
    --nodes=*) nodes=${1#*=}; shift ;;
    --storage-nodes) storage_nodes=${2:?--storage-nodes needs a comma-separated list}; shift 2 ;;
    --storage-nodes=*) storage_nodes=${1#*=}; shift ;;
    --admin) admin=${2:?--admin needs a name}; shift 2 ;;
    --admin=*) admin=${1#*=}; shift ;;
    --all-in-one) all_in_one=${2:?--all-in-one needs a node name}; shift 2 ;;
    --all-in-one=*) all_in_one=${1#*=}; shift ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) if [ -z "$dir" ]; then dir=$1; elif [ -z "$ns" ]; then ns=$1; else usage; fi; shift ;;
  esac
done
[ -n "$dir" ] || usage
ns=${ns:-nvmirror}
days_ca=3650
days_cert=825
command -v openssl >/dev/null || { echo "openssl missing: apt-get install -y openssl" >&2; exit 1; }

# A name is what Kubernetes accepts as a node name and nvmirror as a
# certificate's CN: lowercase letters, digits, '-' and '.'.
valid_name() {
  [[ $1 =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$ ]] && [ ${#1} -le 253 ] || {
    echo "$2 \"$1\": want a DNS name (lowercase letters, digits, '-', '.'), like a Kubernetes node name" >&2; exit 2; }
}
IFS=, read -r -a node_list <<< "$nodes"
IFS=, read -r -a storage_list <<< "$storage_nodes"
for n in "${node_list[@]}"; do valid_name "$n" --nodes; done
for n in "${storage_list[@]}"; do valid_name "$n" --storage-nodes; done
valid_name "$admin" --admin
[ -z "$all_in_one" ] || valid_name "$all_in_one" --all-in-one

mkdir -p "$dir"
cd "$dir"
umask 077

if [ -e ca.crt ]; then
  [ -e ca.key ] || { echo "$dir/ca.crt exists without ca.key: cannot issue more certificates" >&2; exit 1; }
  echo "kept   ca.crt (issuing with the existing CA)"
else
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout ca.key -out ca.crt -days "$days_ca" -subj "/CN=nvmirror CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "issued ca.crt"
fi

# cert FILE SUBJECT USAGE [SAN]: a certificate signed by the CA, unless FILE.crt exists.
cert() {
  local file=$1 subj=$2 usage=$3 san=${4:-}
  if [ -e "$file.crt" ] || [ -e "$file.key" ]; then
    echo "kept   $file.crt"
    return
  fi
  mkdir -p "$(dirname "$file")"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$file.key" -out "$file.csr" -subj "$subj" 2>/dev/null
  {
    printf 'extendedKeyUsage=%s\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n' "$usage"
    [ -z "$san" ] || printf 'subjectAltName=%s\n' "$san"
  } > "$file.ext"
  openssl x509 -req -in "$file.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out "$file.crt" -days "$days_cert" -extfile "$file.ext" 2>/dev/null
  rm -f "$file.csr" "$file.ext"
  echo "issued $file.crt ($subj)"
}

cert provisioner "/CN=nvmirror-provisioner" serverAuth \
  "DNS:nvmirror-provisioner,DNS:nvmirror-provisioner.$ns,DNS:nvmirror-provisioner.$ns.svc,DNS:nvmirror-provisioner.$ns.svc.cluster.local,DNS:localhost,IP:127.0.0.1"
cert provisioner-client "/O=provisioner/CN=nvmirror-provisioner" clientAuth
cert controller "/O=controller/CN=nvmirror-controller" clientAuth
cert admin "/O=admin/CN=$admin" clientAuth
for n in "${node_list[@]}"; do
  cert "nodes/$n/tls" "/O=node/CN=$n" clientAuth
done
[ -z "$all_in_one" ] || cert "all-in-one/$all_in_one/tls" "/O=controller/O=node/CN=$all_in_one" clientAuth
# Each agent's certificate names its storage node: the provisioner checks
# the name of the node it means to reach, so one storage node cannot answer
# for another.
for n in "${storage_list[@]}"; do
  cert "storage-nodes/$n/tls" "/O=storage-node/CN=$n" serverAuth "DNS:$n"
done
rm -f ca.srl
chmod -R go-rwx .
echo "Certificates in $dir (private, keep it out of git)."
