{{/* Chart name. */}}
{{- define "labelfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Release-qualified name. Components append a suffix of at most 20 characters
("-coordinator-metrics"), so the base is cut at 43 characters: every object name stays within
63 (a DNS label; Service names must also start with a letter).
*/}}
{{- define "labelfleet.fullname" -}}
{{- $full := .Values.fullnameOverride -}}
{{- if not $full -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- $full = ternary .Release.Name (printf "%s-%s" .Release.Name $name) (contains $name .Release.Name) -}}
{{- end -}}
{{- $full = regexReplaceAll "-+$" ($full | trunc 43) "" -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $full) -}}
{{- fail (printf "object names would start with %q, which is not a DNS-1035 label (a-z, 0-9 and '-', starting with a letter): pick another release name or set fullnameOverride" $full) -}}
{{- end -}}
{{- $full -}}
{{- end -}}

{{- define "labelfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels shared by every object. */}}
{{- define "labelfleet.labels" -}}
helm.sh/chart: {{ include "labelfleet.chart" . }}
app.kubernetes.io/name: {{ include "labelfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: labelfleet
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "worker"). */}}
{{- define "labelfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "labelfleet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Full labels of one component: (dict "root" $ "component" "worker"). */}}
{{- define "labelfleet.componentLabels" -}}
{{ include "labelfleet.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "labelfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "labelfleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image of a component: (dict "root" $ "image" .Values.worker.image). */}}
{{- define "labelfleet.image" -}}
{{- $repo := default .root.Values.image.repository .image.repository -}}
{{- $tag := default (default .root.Chart.AppVersion .root.Values.image.tag) .image.tag -}}
{{- printf "%s:%s" $repo (toString $tag) -}}
{{- end -}}

{{/* Object names. */}}
{{- define "labelfleet.coordinator.fullname" -}}
{{- printf "%s-coordinator" (include "labelfleet.fullname" .) -}}
{{- end -}}
{{- define "labelfleet.worker.fullname" -}}
{{- printf "%s-worker" (include "labelfleet.fullname" .) -}}
{{- end -}}
{{- define "labelfleet.trainer.fullname" -}}
{{- printf "%s-trainer" (include "labelfleet.fullname" .) -}}
{{- end -}}
{{- define "labelfleet.etcd.fullname" -}}
{{- printf "%s-etcd" (include "labelfleet.fullname" .) -}}
{{- end -}}

{{/* The store of the coordinators and the trainer: environment, mounts and volumes. */}}
{{- define "labelfleet.storeEnv" -}}
- name: LABELFLEET_STORE
  value: {{ default .Values.store.mountPath .Values.store.url | quote }}
{{- with .Values.store.endpoint }}
- name: LABELFLEET_STORE_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end -}}
{{/* envFrom of a role: the store's credentials Secret, then the role's own envFrom:
(dict "root" $ "envFrom" .Values.worker.envFrom). */}}
{{- define "labelfleet.envFrom" -}}
{{- if or .root.Values.store.credentialsSecret .envFrom }}
envFrom:
  {{- with .root.Values.store.credentialsSecret }}
  - secretRef:
      name: {{ . }}
  {{- end }}
  {{- with .envFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end -}}
{{- define "labelfleet.storeMount" -}}
{{- if not .Values.store.url }}
- name: store
  mountPath: {{ .Values.store.mountPath }}
{{- end }}
{{- end -}}
{{- define "labelfleet.storeVolume" -}}
{{- if not .Values.store.url }}
- name: store
  persistentVolumeClaim:
    claimName: {{ include "labelfleet.store.claimName" . }}
{{- end }}
{{- end -}}

{{- define "labelfleet.store.claimName" -}}
{{- default (printf "%s-store" (include "labelfleet.fullname" .)) .Values.store.existingClaim -}}
{{- end -}}

{{/* etcd client endpoints, comma-separated (LABELFLEET_ETCD). */}}
{{- define "labelfleet.etcd.endpoints" -}}
{{- if .Values.etcd.endpoints -}}
{{- join "," .Values.etcd.endpoints -}}
{{- else if .Values.etcd.bundled.enabled -}}
{{- printf "%s://%s.%s.svc:2379" (ternary "https" "http" .Values.security.tls) (include "labelfleet.etcd.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- fail "labelfleet needs etcd: set etcd.endpoints or etcd.bundled.enabled=true" -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by the server roles: POD_IP (downward API), etcd, home, logging. */}}
{{- define "labelfleet.commonEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: LABELFLEET_ETCD
  value: {{ include "labelfleet.etcd.endpoints" . | quote }}
- name: LABELFLEET_ETCD_PREFIX
  value: {{ .Values.etcd.prefix | quote }}
- name: LABELFLEET_HOME
  value: {{ .Values.labelfleetHome | quote }}
- name: RUST_LOG
  value: {{ .Values.logFilter | quote }}
- name: LABELFLEET_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- end -}}

{{/* Scrape annotations for a metrics port (an int). */}}
{{- define "labelfleet.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ . | quote }}
prometheus.io/path: /metrics
{{- end -}}

{{/* Pod spec entries a role's values may add (empty: nothing): priorityClassName,
runtimeClassName and initContainers. Argument: the role's values. */}}
{{- define "labelfleet.podExtras" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .initContainers }}
initContainers:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* GPU resources merged into a component's resources: (dict "resources" ... "gpu" ...). */}}
{{- define "labelfleet.resources" -}}
{{- $res := deepCopy (default dict .resources) -}}
{{- if .gpu.enabled -}}
{{- $gpu := dict .gpu.resourceName (toString .gpu.count) -}}
{{- $_ := set $res "limits" (merge (default dict $res.limits) $gpu) -}}
{{- $_ := set $res "requests" (merge (default dict $res.requests) $gpu) -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* The Secret of a role's certificate: (dict "root" $ "role" "worker"). */}}
{{- define "labelfleet.tlsSecret" -}}
{{- $s := index .root.Values.security.secrets .role -}}
{{- default (printf "%s-%s-tls" (include "labelfleet.fullname" .root) .role) $s -}}
{{- end -}}

{{/* TLS of a role and its etcd client, or --insecure: (dict "root" $ "role" "worker"). */}}
{{- define "labelfleet.securityEnv" -}}
{{- $v := .root.Values -}}
{{- if $v.security.tls }}
- name: LABELFLEET_TLS_CA
  value: /etc/labelfleet/tls/ca.pem
- name: LABELFLEET_TLS_CERT
  value: /etc/labelfleet/tls/tls.crt
- name: LABELFLEET_TLS_KEY
  value: /etc/labelfleet/tls/tls.key
- name: LABELFLEET_HEALTH_LISTEN
  value: "0.0.0.0:{{ $v.security.healthPort | int }}"
{{- else }}
- name: LABELFLEET_INSECURE
  value: "true"
{{- end }}
{{- if and $v.security.tls $v.etcd.bundled.enabled (not $v.etcd.endpoints) }}
# the bundled etcd requires a certificate signed by the cluster CA: the role's own
- name: LABELFLEET_ETCD_CA
  value: /etc/labelfleet/tls/ca.pem
- name: LABELFLEET_ETCD_CERT
  value: /etc/labelfleet/tls/tls.crt
- name: LABELFLEET_ETCD_KEY
  value: /etc/labelfleet/tls/tls.key
{{- else if $v.etcd.tlsSecret }}
- name: LABELFLEET_ETCD_CA
  value: /etc/labelfleet/etcd/ca.pem
- name: LABELFLEET_ETCD_CERT
  value: /etc/labelfleet/etcd/tls.crt
- name: LABELFLEET_ETCD_KEY
  value: /etc/labelfleet/etcd/tls.key
{{- end }}
{{- if $v.etcd.user }}
- name: LABELFLEET_ETCD_USER
  value: {{ $v.etcd.user | quote }}
- name: LABELFLEET_ETCD_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.etcd.passwordSecret | quote }}
      key: password
{{- end }}
{{- end -}}

{{- define "labelfleet.securityMounts" -}}
{{- if .Values.security.tls }}
- name: tls
  mountPath: /etc/labelfleet/tls
  readOnly: true
{{- end }}
{{- if .Values.etcd.tlsSecret }}
- name: etcd-tls
  mountPath: /etc/labelfleet/etcd
  readOnly: true
{{- end }}
{{- end -}}

{{- define "labelfleet.securityVolumes" -}}
{{- if .root.Values.security.tls }}
- name: tls
  secret:
    secretName: {{ include "labelfleet.tlsSecret" . }}
    defaultMode: 0400
{{- end }}
{{- if .root.Values.etcd.tlsSecret }}
- name: etcd-tls
  secret:
    secretName: {{ .root.Values.etcd.tlsSecret }}
    defaultMode: 0400
{{- end }}
{{- end -}}

{{/* The probe port: the plaintext health port over TLS, else the gRPC port. */}}
{{- define "labelfleet.probePort" -}}
{{- if .root.Values.security.tls -}}
{{- .root.Values.security.healthPort | int -}}
{{- else -}}
{{- .port | int -}}
{{- end -}}
{{- end -}}

{{/* NetworkPolicy rules of a metrics port and of the health port. */}}
{{- define "labelfleet.netpol.metrics" -}}
{{- if .root.Values.metrics.enabled }}
- ports:
    - port: {{ .port | int }}
      protocol: TCP
  {{- with .root.Values.security.networkPolicy.metricsFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
{{- define "labelfleet.netpol.health" -}}
{{- if .Values.security.tls }}
- ports:
    - port: {{ .Values.security.healthPort | int }}
      protocol: TCP
{{- end }}
{{- end }}
