{{/* Chart name. */}}
{{- define "labelfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; components append a suffix (at most 16 characters). */}}
{{- define "labelfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
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
{{- define "labelfleet.storeEnvFrom" -}}
{{- with .Values.store.credentialsSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
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
{{- printf "http://%s.%s.svc:2379" (include "labelfleet.etcd.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- fail "labelfleet needs etcd: set etcd.endpoints or etcd.bundled.enabled=true" -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by the server roles: POD_IP (downward API), etcd, logging, home. */}}
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
{{- end -}}

{{/* Scrape annotations for a metrics port (an int). */}}
{{- define "labelfleet.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ . | quote }}
prometheus.io/path: /metrics
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
