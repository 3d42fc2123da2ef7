{{/*
The nvmirror image with its tag (the chart's appVersion unless image.tag).
*/}}
{{- define "nvmirror.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/*
kustomize's name for a generated ConfigMap or Secret: NAME-HASH, HASH being
kustomize's content hash (sigs.k8s.io/kustomize/api/hasher: the first ten
hex digits of the SHA-256 of the JSON of kind, type, data and an empty name,
with 0 1 3 a e spelt g h k m t). The same names as the kustomize base, and,
as there, a change of content is a new name, which rolls the pods using it.
Argument: a dict with name, kind, data (values as the object holds them,
base64 for a Secret) and, for a Secret, type.
*/}}
{{- define "nvmirror.generatedName" -}}
{{- $fields := dict "kind" .kind "name" "" "data" .data -}}
{{- if eq .kind "Secret" }}{{ $_ := set $fields "type" .type }}{{ end -}}
{{- $hash := $fields | toJson | sha256sum | trunc 10 | replace "0" "g" | replace "1" "h" | replace "3" "k" | replace "a" "m" | replace "e" "t" -}}
{{ .name }}-{{ $hash }}
{{- end -}}

{{/*
The placeholder every credential Secret the chart makes holds: not PEM, so
every nvmirror process refuses it by name.
*/}}
{{- define "nvmirror.placeholder" -}}
REPLACE-ME-see-docs-install.md
{{- end -}}

{{/*
The credential Secrets: for each, the value naming an existing Secret, the
chart's own name for it, its type and its placeholder data. Returned as YAML
(fromYaml), so the Secret objects and the references to them are made from
this one table.
*/}}
{{- define "nvmirror.credentialSecrets" -}}
{{- $p := include "nvmirror.placeholder" . | b64enc -}}
- name: nvmirror-admin-tls
  existing: {{ .Values.credentials.adminTLSSecret | quote }}
  type: kubernetes.io/tls
  data: {tls.crt: {{ $p }}, tls.key: {{ $p }}}
- name: nvmirror-ca
  existing: {{ .Values.credentials.caSecret | quote }}
  type: Opaque
  data: {ca.crt: {{ $p }}}
- name: nvmirror-controller-tls
  existing: {{ .Values.credentials.controllerTLSSecret | quote }}
  type: kubernetes.io/tls
  data: {tls.crt: {{ $p }}, tls.key: {{ $p }}}
- name: nvmirror-provisioner-client-tls
  existing: {{ .Values.credentials.provisionerClientTLSSecret | quote }}
  type: kubernetes.io/tls
  data: {tls.crt: {{ $p }}, tls.key: {{ $p }}}
- name: nvmirror-provisioner-tls
  existing: {{ .Values.credentials.provisionerTLSSecret | quote }}
  type: kubernetes.io/tls
  data: {tls.crt: {{ $p }}, tls.key: {{ $p }}}
{{- if eq .Values.provisioner.store "etcd" }}
- name: nvmirror-etcd-client
  existing: {{ .Values.provisioner.etcd.clientSecret | quote }}
  type: kubernetes.io/tls
  data: {ca.crt: {{ $p }}, tls.crt: {{ $p }}, tls.key: {{ $p }}}
{{- end }}
{{- end -}}

{{/*
The name pods use for a credential Secret: the existing one the values
name, else the chart's placeholder with its kustomize hash.
Argument: (list $ "nvmirror-ca").
*/}}
{{- define "nvmirror.secretName" -}}
{{- $root := index . 0 -}}
{{- $want := index . 1 -}}
{{- $found := "" -}}
{{- range (include "nvmirror.credentialSecrets" $root | fromYamlArray) -}}
{{- if eq .name $want -}}
{{- if .existing }}{{ $found = .existing }}{{ else }}{{ $found = include "nvmirror.generatedName" (dict "name" .name "kind" "Secret" "type" .type "data" .data) }}{{ end -}}
{{- end -}}
{{- end -}}
{{- required (printf "no credential Secret %s" $want) $found -}}
{{- end -}}

{{/*
The storage node list the provisioner reads (--storage-nodes-file): one
NAME=HOST:PORT line per storage node, or the base's placeholder.
*/}}
{{- define "nvmirror.storageNodesData" -}}
{{- if .Values.storageNodes -}}
{{- range .Values.storageNodes }}{{ .name }}={{ .address }}
{{ end -}}
{{- else -}}
# PLACEHOLDER. The provisioner's storage nodes, one NAME=HOST:PORT per line:
# NAME the node's name (what --node-name the agent reports, and what the
# storageNodes StorageClass parameter selects), HOST:PORT its agent's API,
# the node's address and port 9400. For example:
#
#   storage-1=10.0.0.11:9400
#   storage-2=10.0.0.12:9400
#   storage-3=10.0.0.13:9400
#
# Replace this file in your own overlay (docs/install.md); with none listed
# the provisioner stops at start with "no storage nodes".
{{ end -}}
{{- end -}}

{{- define "nvmirror.storageNodesName" -}}
{{ include "nvmirror.generatedName" (dict "name" "nvmirror-storage-nodes" "kind" "ConfigMap" "data" (dict "storage-nodes" (include "nvmirror.storageNodesData" .))) }}
{{- end -}}

{{- define "nvmirror.etcdEndpointsName" -}}
{{ include "nvmirror.generatedName" (dict "name" "nvmirror-etcd" "kind" "ConfigMap" "data" (dict "endpoints" (join "," .Values.provisioner.etcd.endpoints))) }}
{{- end -}}

{{/*
Labels of one component. Argument: the component's name.
*/}}
{{- define "nvmirror.labels" -}}
app.kubernetes.io/name: nvmirror
app.kubernetes.io/component: {{ . }}
{{- end -}}
