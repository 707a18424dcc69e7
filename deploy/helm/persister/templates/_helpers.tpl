{{/*
Names and labels.
*/}}
{{- define "persister.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "persister.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "persister.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "persister.selectorLabels" -}}
app.kubernetes.io/name: {{ include "persister.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "persister.labels" -}}
helm.sh/chart: {{ include "persister.chart" . }}
{{ include "persister.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chronow
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "persister.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "persister.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "persister.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
persister.chronosName is the Secret/ConfigMap holding the chronos config.
*/}}
{{- define "persister.chronosName" -}}
{{- if .Values.chronos.name }}
{{- .Values.chronos.name }}
{{- else if .Values.chronos.create }}
{{- printf "%s-chronos" (include "persister.fullname" .) }}
{{- else }}
{{- fail "chronos.enabled needs chronos.name (an existing Secret or ConfigMap) or chronos.create: true" }}
{{- end }}
{{- end }}

{{/*
persister.scalar renders a value as an env string: integers stay integers
(values.yaml numbers arrive as float64), everything else as text.
*/}}
{{- define "persister.scalar" -}}
{{- if kindIs "float64" . }}
{{- . | int64 | toString }}
{{- else }}
{{- . | toString }}
{{- end }}
{{- end }}

{{/*
persister.redisURL: REDIS_URL, defaulting by mode (sidecar = localhost).
Argument: dict "ctx" root "sidecar" bool.
*/}}
{{- define "persister.redisURL" -}}
{{- $v := .ctx.Values }}
{{- if $v.redis.url }}
{{- $v.redis.url }}
{{- else if .sidecar }}
{{- "redis://127.0.0.1:6379/0" }}
{{- else }}
{{- "redis://redis-master:6379/0" }}
{{- end }}
{{- end }}

{{/*
persister.env: the container's environment. Secrets only through secretKeyRef.
Argument: dict "ctx" root "sidecar" bool.
*/}}
{{- define "persister.env" -}}
{{- $v := .ctx.Values -}}
- name: PERSISTER_CONSUMER
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: PERSISTER_HTTP_ADDR
  value: {{ printf ":%s" (include "persister.scalar" $v.httpPort) | quote }}
- name: PERSISTER_SHUTDOWN_GRACE
  value: {{ printf "%ss" (include "persister.scalar" $v.config.shutdownGraceSeconds) | quote }}
- name: REDIS_URL
  value: {{ include "persister.redisURL" . | quote }}
{{- with $v.redis.username }}
- name: REDIS_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if $v.redis.password.secretName }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.redis.password.secretName | quote }}
      key: {{ required "redis.password.secretKey is required with redis.password.secretName" $v.redis.password.secretKey | quote }}
{{- end }}
{{- if and (not (kindIs "invalid" $v.redis.db)) (ne (toString $v.redis.db) "") }}
- name: REDIS_DB
  value: {{ include "persister.scalar" $v.redis.db | quote }}
{{- end }}
{{- with $v.redis.keyPrefix }}
- name: REDIS_KEY_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- with $v.redis.keyPrefixForm }}
- name: PERSISTER_KEY_PREFIX_FORM
  value: {{ . | quote }}
{{- end }}
{{- with $v.redis.clusterNodes }}
- name: REDIS_CLUSTER_NODES
  value: {{ toJson . | quote }}
{{- end }}
{{- if $v.redis.tls.enabled }}
- name: REDIS_TLS
  value: "true"
{{- end }}
{{- if $v.redis.tls.caSecretName }}
- name: REDIS_CA_CERT
  value: {{ printf "/etc/persister/redis-ca/%s" $v.redis.tls.caSecretKey | quote }}
{{- end }}
{{- with $v.redis.tls.clientCert }}
{{- if .secretName }}
- name: REDIS_TLS_CERT
  value: {{ printf "/etc/persister/redis-client/%s" .certKey | quote }}
- name: REDIS_TLS_KEY
  value: {{ printf "/etc/persister/redis-client/%s" .keyKey | quote }}
{{- end }}
{{- end }}
{{- if $v.web.secretName }}
{{- if eq (int $v.web.probePort) (int $v.httpPort) }}
{{- fail "web.probePort must differ from httpPort: the probes need a port without the web config's TLS and credentials" }}
{{- end }}
- name: PERSISTER_WEB_CONFIG_FILE
  value: {{ printf "/etc/persister/web/%s" $v.web.configKey | quote }}
- name: PERSISTER_PROBE_ADDR
  value: {{ printf ":%s" (include "persister.scalar" $v.web.probePort) | quote }}
{{- end }}
{{- if $v.mongo.uri.secretName }}
- name: MONGO_URI
  valueFrom:
    secretKeyRef:
      name: {{ $v.mongo.uri.secretName | quote }}
      key: {{ required "mongo.uri.secretKey is required with mongo.uri.secretName" $v.mongo.uri.secretKey | quote }}
{{- end }}
{{- if $v.chronos.enabled }}
- name: CHRONOS_CONFIG
  value: {{ printf "%s/%s" (trimSuffix "/" $v.chronos.mountPath) $v.chronos.key | quote }}
{{- end }}
{{- range $key, $val := $v.config }}
{{- if and (ne $key "shutdownGraceSeconds") (not (kindIs "invalid" $val)) (ne (toString $val) "") }}
- name: {{ printf "PERSISTER_%s" ($key | snakecase | upper) }}
  value: {{ include "persister.scalar" $val | quote }}
{{- end }}
{{- end }}
{{- if and $v.goMemLimitFromLimit $v.resources.limits $v.resources.limits.memory }}
- name: GOMEMLIMIT
  valueFrom:
    resourceFieldRef:
      resource: limits.memory
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
persister.volumeMounts and persister.volumes: chronos config, Redis CA, extras.
*/}}
{{- define "persister.volumeMounts" -}}
{{- if .Values.chronos.enabled }}
- name: chronos-config
  mountPath: {{ .Values.chronos.mountPath | quote }}
  readOnly: true
{{- end }}
{{- if .Values.redis.tls.caSecretName }}
- name: redis-ca
  mountPath: /etc/persister/redis-ca
  readOnly: true
{{- end }}
{{- if .Values.redis.tls.clientCert.secretName }}
- name: redis-client-cert
  mountPath: /etc/persister/redis-client
  readOnly: true
{{- end }}
{{- if .Values.web.secretName }}
- name: web-config
  mountPath: /etc/persister/web
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "persister.volumes" -}}
{{- if .Values.chronos.enabled }}
- name: chronos-config
{{- if eq .Values.chronos.kind "Secret" }}
  secret:
    secretName: {{ include "persister.chronosName" . | quote }}
    items:
      - key: {{ .Values.chronos.key | quote }}
        path: {{ .Values.chronos.key | quote }}
{{- else if eq .Values.chronos.kind "ConfigMap" }}
  configMap:
    name: {{ include "persister.chronosName" . | quote }}
    items:
      - key: {{ .Values.chronos.key | quote }}
        path: {{ .Values.chronos.key | quote }}
{{- else }}
{{- fail (printf "chronos.kind must be Secret or ConfigMap, got %q" .Values.chronos.kind) }}
{{- end }}
{{- end }}
{{- if .Values.redis.tls.caSecretName }}
- name: redis-ca
  secret:
    secretName: {{ .Values.redis.tls.caSecretName | quote }}
    items:
      - key: {{ .Values.redis.tls.caSecretKey | quote }}
        path: {{ .Values.redis.tls.caSecretKey | quote }}
{{- end }}
{{- with .Values.redis.tls.clientCert }}
{{- if .secretName }}
- name: redis-client-cert
  secret:
    secretName: {{ .secretName | quote }}
    items:
      - key: {{ .certKey | quote }}
        path: {{ .certKey | quote }}
      - key: {{ .keyKey | quote }}
        path: {{ .keyKey | quote }}
{{- end }}
{{- end }}
{{- if .Values.web.secretName }}
# The whole Secret: the web config names its certificate files.
- name: web-config
  secret:
    secretName: {{ .Values.web.secretName | quote }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
persister.probe renders one HTTP probe. Argument: dict "probe" values "path" string.
*/}}
{{- define "persister.probe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}

{{/*
persister.container: the persister container (one list item).
Argument: dict "ctx" root "sidecar" bool "args" list "resources" map "serve" bool (ports and probes).
*/}}
{{- define "persister.container" -}}
{{- $v := .ctx.Values -}}
- name: {{ if .sidecar }}{{ $v.sidecar.containerName }}{{ else }}persister{{ end }}
  image: {{ include "persister.image" .ctx | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args:
    {{- toYaml .args | nindent 4 }}
  {{- $probePort := "persister-http" }}
  {{- if $v.web.secretName }}
  {{- $probePort = "persister-probe" }}
  {{- end }}
  {{- if .serve }}
  ports:
    - name: persister-http
      containerPort: {{ include "persister.scalar" $v.httpPort }}
      protocol: TCP
    {{- if $v.web.secretName }}
    # Plain HTTP, /healthz and /readyz only (PERSISTER_PROBE_ADDR).
    - name: persister-probe
      containerPort: {{ include "persister.scalar" $v.web.probePort }}
      protocol: TCP
    {{- end }}
  {{- end }}
  env:
    {{- include "persister.env" . | nindent 4 }}
  {{- with $v.extraEnvFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .serve }}
  {{- if $v.livenessProbe.enabled }}
  livenessProbe:
    {{- include "persister.probe" (dict "probe" $v.livenessProbe "path" "/healthz" "port" $probePort) | nindent 4 }}
  {{- end }}
  {{- if $v.readinessProbe.enabled }}
  readinessProbe:
    {{- $path := "/readyz" }}
    {{- if and .sidecar (not $v.sidecar.gateRedisReadiness) }}
    {{- $path = "/healthz" }}
    {{- end }}
    {{- include "persister.probe" (dict "probe" $v.readinessProbe "path" $path "port" $probePort) | nindent 4 }}
  {{- end }}
  {{- end }}
  {{- with .resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  {{- $mounts := include "persister.volumeMounts" .ctx | trim }}
  {{- if $mounts }}
  volumeMounts:
    {{- $mounts | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
persister.sidecarContainer: the container to add to an existing Redis pod's
"containers" list; it talks to Redis on localhost unless redis.url is set.
Call it with the persister chart's scope, e.g. from a parent chart that has
this chart as a dependency:
  containers:
    - name: redis
      ...
    {{- include "persister.sidecarContainer" .Subcharts.persister | nindent 4 }}
*/}}
{{- define "persister.sidecarContainer" -}}
{{- include "persister.container" (dict "ctx" . "sidecar" true "args" (list "run") "resources" .Values.resources "serve" true) }}
{{- end }}

{{/*
persister.sidecarVolumes: the volumes persister.sidecarContainer mounts, to
add to the Redis pod's "volumes" list (empty when it mounts none).
*/}}
{{- define "persister.sidecarVolumes" -}}
{{- include "persister.volumes" . }}
{{- end }}

{{/*
persister.podSecurity: pod-level fields shared by the Deployment and the Job.
*/}}
{{- define "persister.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $sa := include "persister.serviceAccountName" . }}
{{- if $sa }}
serviceAccountName: {{ $sa }}
{{- end }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
persister.configChecksum changes when a chart-created chronos config changes,
so the pods restart and read it (the daemon reads it once at start).
*/}}
{{- define "persister.configChecksum" -}}
{{- if and .Values.chronos.enabled .Values.chronos.create }}
checksum/chronos: {{ include (print $.Template.BasePath "/chronos-config.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/*
persister.terminationGrace: the daemon's grace plus a margin, always above it.
*/}}
{{- define "persister.terminationGrace" -}}
{{- $grace := int64 .Values.config.shutdownGraceSeconds }}
{{- $margin := int64 .Values.terminationGraceMarginSeconds }}
{{- if lt $margin 1 }}
{{- fail "terminationGraceMarginSeconds must be >= 1: the pod must outlive the daemon's shutdown grace" }}
{{- end }}
{{- add $grace $margin }}
{{- end }}
