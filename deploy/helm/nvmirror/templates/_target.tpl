{{/*
The storage node agent DaemonSet, once (rack nil) or once per rack.
Argument: a dict with root (the chart's context) and rack (a racks entry or nil).
*/}}
{{- define "nvmirror.targetDaemonSet" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: nvmirror-target{{ with .rack }}-{{ .name }}{{ end }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    app.kubernetes.io/name: nvmirror
    app.kubernetes.io/component: target
    {{- with .rack }}
    nvmirror.io/rack: {{ .name }}
    {{- end }}
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: nvmirror
      app.kubernetes.io/component: target
      {{- with .rack }}
      nvmirror.io/rack: {{ .name }}
      {{- end }}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 1
  template:
    metadata:
      labels:
        app.kubernetes.io/name: nvmirror
        app.kubernetes.io/component: target
        {{- with .rack }}
        nvmirror.io/rack: {{ .name }}
        {{- end }}
    spec:
      serviceAccountName: nvmirror-target
      priorityClassName: system-node-critical
      # Compute nodes reach the exports at the node's own address, and the
      # provisioner reaches the agent at NODE_IP:9400 (the storage nodes
      # ConfigMap): both stable only on the host network.
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      nodeSelector:
        {{- toYaml $root.Values.target.nodeSelector | nindent 8 }}
        {{- with .rack }}
        nvmirror.io/rack: {{ .name }}
        {{- end }}
      # Storage nodes are often reserved with a taint of the same name.
      tolerations:
        {{- toYaml $root.Values.target.tolerations | nindent 8 }}
      containers:
        - name: nvmirror-target
          image: {{ include "nvmirror.image" $root }}
          command: ["nvmirror-target"]
          args:
            - --node-name=$(NODE_NAME)
            - --pool-dir=/var/lib/nvmirror/pool
            # The NVMe/TCP export on the node's address (4420: the NVMe/TCP
            # IANA port). For a dedicated storage network, patch in its
            # address instead.
            - --nvme-address=$(NODE_IP):4420
            - --listen=:9400
            # This storage node's own certificate (CN and DNS name: the
            # node's name), on the host, which the provisioner checks.
            - --tls-cert-file=/etc/nvmirror/target-tls/tls.crt
            - --tls-key-file=/etc/nvmirror/target-tls/tls.key
            # Only the provisioner's certificate (Subject O=provisioner)
            # from this CA may call.
            - --tls-client-ca-file=/etc/nvmirror/ca/ca.crt
            - --v=2
            {{- with .rack }}
            - {{ printf "--rack=%s" .name | quote }}
            {{- with get . "zone" }}
            - {{ printf "--zone=%s" . | quote }}
            {{- end }}
            {{- end }}
            {{- range $root.Values.target.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          env:
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            - name: NODE_IP
              valueFrom:
                fieldRef:
                  fieldPath: status.hostIP
          ports:
            - name: grpc
              containerPort: 9400
            - name: nvme-tcp
              containerPort: 4420
          # The API is mutual TLS: a TCP connect is what a kubelet
          # probe can check.
          livenessProbe:
            tcpSocket:
              port: grpc
            initialDelaySeconds: 10
            periodSeconds: 20
            failureThreshold: 3
          readinessProbe:
            tcpSocket:
              port: grpc
            periodSeconds: 10
          securityContext:
            # Writes nvmet configfs, follows /dev/kmsg for session audit, and
            # for offline repairs connects NVMe/TCP namespaces and runs md
            # (/dev/nvme-fabrics, the new block devices, mdadm).
            privileged: true
          resources:
            {{- toYaml $root.Values.target.resources | nindent 12 }}
          volumeMounts:
            - name: configfs
              mountPath: /sys/kernel/config
            - name: pool
              mountPath: /var/lib/nvmirror/pool
            # The host's /dev, not the container's snapshot of it: the
            # namespaces and md arrays an offline repair creates appear
            # there (and /dev/kmsg is in it).
            - name: dev
              mountPath: /dev
            # Each storage node keeps its own certificate on the host
            # (target.certificateHostPath; see the node plugin's node-tls in
            # node.yaml for why).
            - name: target-tls
              mountPath: /etc/nvmirror/target-tls
              readOnly: true
            - name: ca
              mountPath: /etc/nvmirror/ca
              readOnly: true
      volumes:
        - name: configfs
          hostPath:
            path: /sys/kernel/config
            type: Directory
        # The replicas and their state file, together on the host's disk.
        - name: pool
          hostPath:
            path: /var/lib/nvmirror/pool
            type: DirectoryOrCreate
        - name: dev
          hostPath:
            path: /dev
            type: Directory
        - name: target-tls
          hostPath:
            path: {{ $root.Values.target.certificateHostPath }}
            type: Directory
        - name: ca
          secret:
            secretName: {{ include "nvmirror.secretName" (list $root "nvmirror-ca") }}
{{- end -}}
