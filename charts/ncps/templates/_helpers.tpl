{{/* Names and labels. The names and the selector are those of the Go chart, so that a release
installed with it can be upgraded to this chart in place (a StatefulSet's selector, serviceName
and volumeClaimTemplates cannot change). */}}

{{- define "ncps.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ncps.fullname" -}}
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

{{- define "ncps.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ncps.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ncps.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ncps.labels" -}}
helm.sh/chart: {{ include "ncps.chart" . }}
{{ include "ncps.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the pods of Jobs and CronJobs: without app.kubernetes.io/name, so that the Service,
the PodDisruptionBudget and the fsck pod affinity never select them. Call with (list $ "component"). */}}
{{- define "ncps.taskLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/part-of: {{ include "ncps.name" $ }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "ncps.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ncps.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ncps.imageName" -}}
{{- $ := index . 0 -}}
{{- $image := index . 1 -}}
{{- $registry := $.Values.global.imageRegistry | default $image.registry -}}
{{- $tag := $image.tag | default $.Chart.AppVersion | toString -}}
{{- if $registry }}{{ printf "%s/%s:%s" $registry $image.repository $tag }}{{ else }}{{ printf "%s:%s" $image.repository $tag }}{{ end -}}
{{- end }}

{{- define "ncps.image" -}}
{{- include "ncps.imageName" (list . .Values.image) -}}
{{- end }}

{{- define "ncps.initImage" -}}
{{- include "ncps.imageName" (list . .Values.initImage) -}}
{{- end }}

{{/* The port ncps listens on, from config.server.addr (":8501", "0.0.0.0:8501", "[::]:8501"). */}}
{{- define "ncps.port" -}}
{{- regexFind "[0-9]+$" .Values.config.server.addr | default "8501" -}}
{{- end }}

{{/* Where things are. Each helper prints "true" or nothing. */}}

{{- define "ncps.redisEnabled" -}}
{{- if or .Values.config.redis.enabled (eq .Values.config.lock.backend "redis") }}true{{ end -}}
{{- end }}

{{- define "ncps.sqlite" -}}
{{- if eq .Values.config.database.type "sqlite" }}true{{ end -}}
{{- end }}

{{/* The pod has the storage volume: local storage, or an SQLite file (which lives on it). */}}
{{- define "ncps.storageVolume" -}}
{{- if or (eq .Values.config.storage.type "local") (include "ncps.sqlite" .) }}true{{ end -}}
{{- end }}

{{- define "ncps.persistent" -}}
{{- $p := .Values.config.storage.local.persistence -}}
{{- if or $p.enabled $p.existingClaim }}true{{ end -}}
{{- end }}

{{/* The storage volume can be mounted by several pods at once: ReadWriteMany, and one claim for all
(an existing claim, or the chart's claim in Deployment mode; a StatefulSet's claim template gives
every pod a volume of its own). */}}
{{- define "ncps.volumeShared" -}}
{{- $p := .Values.config.storage.local.persistence -}}
{{- if and (include "ncps.storageVolume" .) (has "ReadWriteMany" $p.accessModes) (or $p.existingClaim (and $p.enabled (eq .Values.mode "deployment"))) }}true{{ end -}}
{{- end }}

{{/* The data is reachable from a pod other than the ncps pods, before the release's own objects
exist: PostgreSQL, and S3 or an existing ReadWriteMany claim. */}}
{{- define "ncps.dataReachable" -}}
{{- $p := .Values.config.storage.local.persistence -}}
{{- if and (not (include "ncps.sqlite" .)) (or (eq .Values.config.storage.type "s3") (and $p.existingClaim (has "ReadWriteMany" $p.accessModes))) }}true{{ end -}}
{{- end }}

{{/* Where `ncps migrate up` runs: "job", "initContainer" or "" (off). A hook Job cannot open an
SQLite file or a ReadWriteOnce volume that the running pod holds (nor, at install, a claim that
the StatefulSet has not made yet), so those run in an init container of the ncps pod. */}}
{{- define "ncps.migrationPlace" -}}
{{- if .Values.migration.enabled -}}
{{- if and (ne .Values.migration.mode "initContainer") (include "ncps.dataReachable" .) }}job{{ else }}initContainer{{ end -}}
{{- end -}}
{{- end }}

{{/* Where `ncps migrate-narinfo` runs: "job" (online, beside the pods: needs Redis and data every
pod reaches), "initContainer" (before the server in the same pod: offline without Redis, which
is safe because no other pod serves then) or "" (off). */}}
{{- define "ncps.narinfoPlace" -}}
{{- if and .Values.migration.enabled .Values.migration.narinfo.enabled -}}
{{- if and (include "ncps.redisEnabled" .) (not (include "ncps.sqlite" .)) (or (eq .Values.config.storage.type "s3") (include "ncps.volumeShared" .)) }}job{{ else }}initContainer{{ end -}}
{{- end -}}
{{- end }}

{{/* Pods of one release cannot overlap: one SQLite writer, a ReadWriteOnce volume, or the
offline narinfo migration. */}}
{{- define "ncps.exclusive" -}}
{{- if or (include "ncps.sqlite" .) (and (eq .Values.config.storage.type "local") (not (include "ncps.volumeShared" .))) (and (eq (include "ncps.narinfoPlace" .) "initContainer") (not (include "ncps.redisEnabled" .))) }}true{{ end -}}
{{- end }}

{{/* Name of the storage claim as other pods (Jobs, the fsck CronJob) mount it. */}}
{{- define "ncps.storageClaimName" -}}
{{- $p := .Values.config.storage.local.persistence -}}
{{- if $p.existingClaim }}{{ $p.existingClaim }}
{{- else if eq .Values.mode "statefulset" }}{{ printf "storage-%s-0" (include "ncps.fullname" .) }}
{{- else }}{{ include "ncps.fullname" . }}{{ end -}}
{{- end }}

{{- define "ncps.tempClaimName" -}}
{{- $t := .Values.config.cache.tempVolume.pvc -}}
{{- if $t.existingClaim }}{{ $t.existingClaim }}
{{- else if eq .Values.mode "statefulset" }}{{ printf "tmp-%s-0" (include "ncps.fullname" .) }}
{{- else }}{{ printf "%s-temp" (include "ncps.fullname" .) }}{{ end -}}
{{- end }}

{{/* Secrets. */}}

{{- define "ncps.signingKeyGiven" -}}
{{- if and (ne .Values.config.signing.enabled false) (or .Values.config.signing.secretKey .Values.config.signing.existingSecret) }}true{{ end -}}
{{- end }}

{{- define "ncps.netrcGiven" -}}
{{- if or .Values.config.upstream.netrcFile .Values.config.upstream.existingNetrcSecret }}true{{ end -}}
{{- end }}

{{/* Data of the chart's Secret (keys named as in the Go chart), as YAML; empty when there is none. */}}
{{- define "ncps.secretData" -}}
{{- $c := .Values.config -}}
{{- if and (eq $c.storage.type "s3") (not $c.storage.s3.existingSecret) $c.storage.s3.accessKeyId $c.storage.s3.secretAccessKey }}
s3-access-key-id: {{ $c.storage.s3.accessKeyId | b64enc | quote }}
s3-secret-access-key: {{ $c.storage.s3.secretAccessKey | b64enc | quote }}
{{- end }}
{{- if and (eq $c.database.type "postgresql") (not $c.database.postgresql.existingSecret) }}
{{- $pg := $c.database.postgresql }}
{{- $auth := $pg.username | urlquery }}
{{- if $pg.password }}
{{- $auth = printf "%s:%s" $auth ($pg.password | urlquery) }}
postgres-password: {{ $pg.password | b64enc | quote }}
{{- end }}
{{- $query := printf "sslmode=%s" $pg.sslMode }}
{{- if $pg.extraParams }}{{ $query = printf "%s&%s" $query $pg.extraParams }}{{ end }}
database-url: {{ printf "postgresql://%s@%s:%d/%s?%s" $auth $pg.host (int $pg.port) $pg.database $query | b64enc | quote }}
{{- end }}
{{- if and (include "ncps.redisEnabled" .) (not $c.redis.existingSecret) $c.redis.password }}
redis-password: {{ $c.redis.password | b64enc | quote }}
{{- end }}
{{- if and $c.upstream.netrcFile (not $c.upstream.existingNetrcSecret) }}
netrc: {{ $c.upstream.netrcFile | b64enc | quote }}
{{- end }}
{{- if and $c.permissions.getToken (not $c.permissions.getTokenExistingSecret) }}
get-token: {{ $c.permissions.getToken | b64enc | quote }}
{{- end }}
{{- if and $c.permissions.putToken (not $c.permissions.putTokenExistingSecret) }}
put-token: {{ $c.permissions.putToken | b64enc | quote }}
{{- end }}
{{- end }}

{{/* The config file ncps reads (--config). Only keys this ncps knows, and never a secret: those
reach ncps as environment variables from Secrets, or as files mounted from Secrets. */}}
{{- define "ncps.configFile" -}}
{{- $c := .Values.config -}}
{{- $cache := dict "hostname" $c.hostname -}}
{{- $_ := set $cache "sign-narinfo" (ne $c.signing.enabled false) -}}
{{- $_ := set $cache "require-trusted-signature" (eq $c.signing.requireTrustedSignature true) -}}
{{- with $c.signing.trustedUploadKeys }}{{ $_ := set $cache "trusted-upload-keys" . }}{{ end -}}
{{- if include "ncps.signingKeyGiven" . }}{{ $_ := set $cache "secret-key-path" "/etc/ncps/secrets/signing-key" }}{{ end -}}
{{- if $c.permissions.allowPut }}{{ $_ := set $cache "allow-put-verb" true }}{{ end -}}
{{- if $c.permissions.allowDelete }}{{ $_ := set $cache "allow-delete-verb" true }}{{ end -}}
{{- with $c.cache.maxSize }}{{ $_ := set $cache "max-size" (toString .) }}{{ end -}}
{{- $lru := dict -}}
{{- with $c.cache.lruSchedule }}{{ $_ := set $lru "schedule" . }}{{ end -}}
{{- with $c.cache.lruTimezone }}{{ $_ := set $lru "timezone" . }}{{ end -}}
{{- if $lru }}{{ $_ := set $cache "lru" $lru }}{{ end -}}
{{- with $c.cache.tempPath }}{{ $_ := set $cache "temp-path" . }}{{ end -}}
{{- with $c.cache.negativeTTL }}{{ $_ := set $cache "negative-ttl" (toString .) }}{{ end -}}
{{- if include "ncps.netrcGiven" . }}{{ $_ := set $cache "netrc-file" "/etc/ncps/netrc" }}{{ end -}}
{{- if include "ncps.sqlite" . }}{{ $_ := set $cache "database-url" (printf "sqlite:%s" $c.database.sqlite.path) }}{{ end -}}
{{- $pool := dict -}}
{{- if $c.database.pool.maxOpenConns }}{{ $_ := set $pool "max-open-conns" (int $c.database.pool.maxOpenConns) }}{{ end -}}
{{- if $c.database.pool.maxIdleConns }}{{ $_ := set $pool "max-idle-conns" (int $c.database.pool.maxIdleConns) }}{{ end -}}
{{- if $pool }}{{ $_ := set $cache "database" (dict "pool" $pool) }}{{ end -}}
{{- if eq $c.storage.type "s3" -}}
{{- $s3 := dict "bucket" $c.storage.s3.bucket "region" $c.storage.s3.region -}}
{{- with $c.storage.s3.endpoint }}{{ $_ := set $s3 "endpoint" . }}{{ end -}}
{{- if $c.storage.s3.forcePathStyle }}{{ $_ := set $s3 "force-path-style" true }}{{ end -}}
{{- $_ := set $cache "storage" (dict "s3" $s3) -}}
{{- else -}}
{{- $_ := set $cache "storage" (dict "local" $c.storage.local.path) -}}
{{- end -}}
{{- $urls := list -}}
{{- $keys := list -}}
{{- range $c.upstream.caches -}}
{{- $urls = append $urls .url -}}
{{- with .publicKey }}{{ $keys = append $keys . }}{{ end -}}
{{- range (.publicKeys | default list) }}{{ $keys = append $keys . }}{{ end -}}
{{- end -}}
{{- $upstream := dict "urls" $urls "public-keys" ($keys | uniq) -}}
{{- with $c.upstream.dialerTimeout }}{{ $_ := set $upstream "dialer-timeout" (toString .) }}{{ end -}}
{{- with $c.upstream.responseHeaderTimeout }}{{ $_ := set $upstream "response-header-timeout" (toString .) }}{{ end -}}
{{- $_ := set $cache "upstream" $upstream -}}
{{- $redisOn := include "ncps.redisEnabled" . -}}
{{- if $redisOn -}}
{{- $redis := dict "addrs" $c.redis.addresses "db" (int $c.redis.db) "use-tls" (eq $c.redis.useTLS true) -}}
{{- if $c.redis.poolSize }}{{ $_ := set $redis "pool-size" (int $c.redis.poolSize) }}{{ end -}}
{{- if and $c.redis.username (not $c.redis.existingSecret) }}{{ $_ := set $redis "username" $c.redis.username }}{{ end -}}
{{- $_ := set $cache "redis" $redis -}}
{{- end -}}
{{- $lock := dict "backend" (ternary "redis" "local" (not (empty $redisOn))) -}}
{{- $_ := set $lock "redis" (dict "key-prefix" $c.lock.redis.keyPrefix) -}}
{{- with $c.lock.downloadTTL }}{{ $_ := set $lock "download-lock-ttl" (toString .) }}{{ end -}}
{{- with $c.lock.lruTTL }}{{ $_ := set $lock "lru-lock-ttl" (toString .) }}{{ end -}}
{{- with $c.cache.downloadPollTimeout }}{{ $_ := set $lock "download-lock-wait" (toString .) }}{{ end -}}
{{- $retry := dict "max-attempts" (int $c.lock.retry.maxAttempts) "jitter" (ne $c.lock.retry.jitter false) -}}
{{- with $c.lock.retry.initialDelay }}{{ $_ := set $retry "initial-delay" (toString .) }}{{ end -}}
{{- with $c.lock.retry.maxDelay }}{{ $_ := set $retry "max-delay" (toString .) }}{{ end -}}
{{- $_ := set $lock "retry" $retry -}}
{{- if $c.lock.allowDegradedMode }}{{ $_ := set $lock "allow-degraded-mode" true }}{{ end -}}
{{- $_ := set $cache "lock" $lock -}}
{{- $server := dict "addr" $c.server.addr -}}
{{- if not (kindIs "invalid" $c.server.workers) }}{{ $_ := set $server "workers" (int $c.server.workers) }}{{ end -}}
{{- $file := dict "cache" $cache "server" $server "log" (dict "level" $c.logLevel) -}}
{{- $_ := set $file "prometheus" (dict "enabled" (eq $c.observability.prometheus.enabled true)) -}}
{{- if $c.observability.opentelemetry.enabled -}}
{{- $otel := dict "enabled" true -}}
{{- with $c.observability.opentelemetry.grpcURL }}{{ $_ := set $otel "grpc-url" . }}{{ end -}}
{{- $_ := set $file "opentelemetry" $otel -}}
{{- end -}}
{{- toYaml $file -}}
{{- end }}

{{/* Environment of every ncps container: the secrets, then extraEnvVars.
Call with (dict "root" $ "secret" NAME) where NAME is the Secret holding the chart-managed keys. */}}
{{- define "ncps.env" -}}
{{- $ := .root -}}
{{- $c := $.Values.config -}}
{{- $secret := .secret -}}
{{- if eq $c.database.type "postgresql" }}
- name: CACHE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $c.database.postgresql.existingSecret | default $secret }}
      key: database-url
{{- end }}
{{- if and (eq $c.storage.type "s3") (or $c.storage.s3.existingSecret (and $c.storage.s3.accessKeyId $c.storage.s3.secretAccessKey)) }}
- name: CACHE_STORAGE_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $c.storage.s3.existingSecret | default $secret }}
      key: {{ ternary "access-key-id" "s3-access-key-id" (not (empty $c.storage.s3.existingSecret)) }}
- name: CACHE_STORAGE_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $c.storage.s3.existingSecret | default $secret }}
      key: {{ ternary "secret-access-key" "s3-secret-access-key" (not (empty $c.storage.s3.existingSecret)) }}
{{- end }}
{{- if include "ncps.redisEnabled" $ }}
{{- if $c.redis.existingSecret }}
{{- if not $c.redis.username }}
- name: CACHE_REDIS_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $c.redis.existingSecret }}
      key: username
      optional: true
{{- end }}
- name: CACHE_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $c.redis.existingSecret }}
      key: password
{{- else if $c.redis.password }}
- name: CACHE_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: redis-password
{{- end }}
{{- end }}
{{- if or $c.permissions.getToken $c.permissions.getTokenExistingSecret }}
- name: CACHE_GET_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $c.permissions.getTokenExistingSecret | default $secret }}
      key: get-token
{{- end }}
{{- if or $c.permissions.putToken $c.permissions.putTokenExistingSecret }}
- name: CACHE_PUT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $c.permissions.putTokenExistingSecret | default $secret }}
      key: put-token
{{- end }}
{{- with $.Values.extraEnvVars }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Where the temp volume is mounted: the temp path when it lies outside the storage volume,
else /tmp (ncps's temp directory with S3, and a writable /tmp under a read-only root). */}}
{{- define "ncps.tempMountPath" -}}
{{- $t := .Values.config.cache.tempPath -}}
{{- $storage := .Values.config.storage.local.path -}}
{{- if and $t (not (and (include "ncps.storageVolume" .) (or (eq $t $storage) (hasPrefix (printf "%s/" (trimSuffix "/" $storage)) $t)))) }}{{ $t }}{{ else }}/tmp{{ end -}}
{{- end }}

{{/* Volume mounts of an ncps container. Call with (dict "root" $ "secretFiles" BOOL): secretFiles
false leaves out the signing key and the netrc file (the migration hook runs before the release's
Secrets exist and needs neither). */}}
{{- define "ncps.volumeMounts" -}}
{{- $ := .root -}}
- name: config
  mountPath: /etc/ncps/config.yaml
  subPath: config.yaml
  readOnly: true
- name: tmp
  mountPath: {{ include "ncps.tempMountPath" $ }}
{{- if ne (include "ncps.tempMountPath" $) "/tmp" }}
- name: scratch
  mountPath: /tmp
{{- end }}
{{- if include "ncps.storageVolume" $ }}
- name: storage
  mountPath: {{ $.Values.config.storage.local.path }}
{{- end }}
{{- if and .secretFiles (include "ncps.signingKeyGiven" $) }}
- name: signing-key
  mountPath: /etc/ncps/secrets/signing-key
  subPath: signing-key
  readOnly: true
{{- end }}
{{- if and .secretFiles (include "ncps.netrcGiven" $) }}
- name: netrc
  mountPath: /etc/ncps/netrc
  subPath: netrc
  readOnly: true
{{- end }}
{{- with $.Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes. Call with (dict "root" $ "configMap" NAME "secret" NAME "claims" BOOL "secretFiles" BOOL):
claims true in pods that are not the StatefulSet's (those name the claims; the StatefulSet's
come from its volumeClaimTemplates); secretFiles as for ncps.volumeMounts. */}}
{{- define "ncps.volumes" -}}
{{- $ := .root -}}
{{- $c := $.Values.config -}}
{{- $p := $c.storage.local.persistence -}}
{{- $tv := $c.cache.tempVolume -}}
- name: config
  configMap:
    name: {{ .configMap }}
{{- if and (eq $tv.type "pvc") (or .claims $tv.pvc.existingClaim) }}
- name: tmp
  persistentVolumeClaim:
    claimName: {{ include "ncps.tempClaimName" $ }}
{{- else if ne $tv.type "pvc" }}
- name: tmp
  emptyDir: {{- toYaml ($tv.emptyDir | default dict) | nindent 4 }}
{{- end }}
{{- if ne (include "ncps.tempMountPath" $) "/tmp" }}
- name: scratch
  emptyDir: {}
{{- end }}
{{- if include "ncps.storageVolume" $ }}
{{- if $p.existingClaim }}
- name: storage
  persistentVolumeClaim:
    claimName: {{ $p.existingClaim }}
{{- else if not $p.enabled }}
- name: storage
  emptyDir: {}
{{- else if .claims }}
- name: storage
  persistentVolumeClaim:
    claimName: {{ include "ncps.storageClaimName" $ }}
{{- end }}
{{- end }}
{{- if and .secretFiles (include "ncps.signingKeyGiven" $) }}
- name: signing-key
  secret:
    secretName: {{ $c.signing.existingSecret | default (printf "%s-signing-key" (include "ncps.fullname" $)) }}
{{- end }}
{{- if and .secretFiles (include "ncps.netrcGiven" $) }}
- name: netrc
  secret:
    secretName: {{ $c.upstream.existingNetrcSecret | default .secret }}
{{- end }}
{{- with $.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Security context of one container: containerDefaults.securityContext with the given one over it. */}}
{{- define "ncps.securityContext" -}}
{{- $ := index . 0 -}}
{{- $ctx := mergeOverwrite (deepCopy (default dict $.Values.containerDefaults.securityContext)) (deepCopy (default dict (index . 1))) -}}
{{- with $ctx }}
securityContext: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* argv of an ncps container, in the Go chart's shape: /bin/ncps --config FILE <command> [flags]. */}}
{{- define "ncps.command" -}}
command:
  - /bin/ncps
args:
  - --config
  - /etc/ncps/config.yaml
{{- range . }}
  - {{ . | quote }}
{{- end }}
{{- end }}

{{/* A container running an ncps command beside or before the server.
Call with (dict "root" $ "name" N "args" LIST "resources" R "securityContext" S "secret" NAME
"secretFiles" BOOL). */}}
{{- define "ncps.taskContainer" -}}
{{- $ := .root -}}
- name: {{ .name }}
  image: {{ include "ncps.image" $ }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  {{- include "ncps.command" .args | nindent 2 }}
  {{- with trim (include "ncps.securityContext" (list $ .securityContext)) }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with trim (include "ncps.env" (dict "root" $ "secret" .secret)) }}
  env: {{- . | nindent 4 }}
  {{- end }}
  resources: {{- toYaml (.resources | default dict) | nindent 4 }}
  volumeMounts: {{- include "ncps.volumeMounts" (dict "root" $ "secretFiles" .secretFiles) | nindent 4 }}
{{- end }}

{{/* The init containers of the ncps pod that migrate before the server starts. */}}
{{- define "ncps.migrationInitContainers" -}}
{{- $ := . -}}
{{- if eq (include "ncps.migrationPlace" $) "initContainer" }}
{{- include "ncps.taskContainer" (dict "root" $ "name" "migrate" "args" (list "migrate" "up") "resources" $.Values.migration.resources "securityContext" $.Values.migration.securityContext "secret" (include "ncps.fullname" $) "secretFiles" true) }}
{{- end }}
{{- if eq (include "ncps.narinfoPlace" $) "initContainer" }}
{{ include "ncps.taskContainer" (dict "root" $ "name" "migrate-narinfo" "args" (list "migrate-narinfo" (printf "--concurrency=%d" (int $.Values.migration.narinfo.concurrency))) "resources" $.Values.migration.resources "securityContext" $.Values.migration.securityContext "secret" (include "ncps.fullname" $) "secretFiles" true) }}
{{- end }}
{{- end }}

{{/* The pod spec of the ncps server (StatefulSet and Deployment). */}}
{{- define "ncps.podTemplate" -}}
{{- $ := . -}}
metadata:
  annotations:
    checksum/config: {{ include "ncps.configFile" $ | sha256sum }}
    checksum/secret: {{ include "ncps.secretData" $ | sha256sum }}
    checksum/signing-key: {{ $.Values.config.signing.secretKey | sha256sum }}
    {{- with $.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  labels:
    {{- include "ncps.selectorLabels" $ | nindent 4 }}
    {{- with $.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets: {{- toYaml . | nindent 4 }}
  {{- end }}
  serviceAccountName: {{ include "ncps.serviceAccountName" $ }}
  automountServiceAccountToken: {{ $.Values.serviceAccount.automountServiceAccountToken }}
  terminationGracePeriodSeconds: {{ $.Values.terminationGracePeriodSeconds }}
  {{- with $.Values.podSecurityContext }}
  securityContext: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $init := include "ncps.migrationInitContainers" $ }}
  {{- if or (trim $init) $.Values.initContainers }}
  initContainers:
    {{- with trim $init }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- with $.Values.initContainers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  containers:
    - name: ncps
      image: {{ include "ncps.image" $ }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      {{- include "ncps.command" (list "serve") | nindent 6 }}
      {{- with trim (include "ncps.securityContext" (list $ $.Values.securityContext)) }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- with trim (include "ncps.env" (dict "root" $ "secret" (include "ncps.fullname" $))) }}
      env: {{- . | nindent 8 }}
      {{- end }}
      ports:
        - name: http
          containerPort: {{ include "ncps.port" $ }}
          protocol: TCP
      {{- with $.Values.startupProbe }}
      startupProbe: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.Values.livenessProbe }}
      livenessProbe: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.Values.readinessProbe }}
      readinessProbe: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.Values.lifecycle }}
      lifecycle: {{- toYaml . | nindent 8 }}
      {{- end }}
      resources: {{- toYaml ($.Values.resources | default dict) | nindent 8 }}
      volumeMounts: {{- include "ncps.volumeMounts" (dict "root" $ "secretFiles" true) | nindent 8 }}
    {{- with $.Values.sidecars }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- $claims := eq $.Values.mode "deployment" }}
  volumes: {{- include "ncps.volumes" (dict "root" $ "configMap" (include "ncps.fullname" $) "secret" (include "ncps.fullname" $) "claims" $claims "secretFiles" true) | nindent 4 }}
  {{- with $.Values.nodeSelector }}
  nodeSelector: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $.Values.affinity }}
  affinity: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $.Values.tolerations }}
  tolerations: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $.Values.topologySpreadConstraints }}
  topologySpreadConstraints: {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* The pod spec of a Job running one ncps command (migration hook, narinfo migration, fsck).
Call with (dict "root" $ "component" C "name" N "args" LIST "task" VALUES "secret" S "configMap" M
"serviceAccount" SA "affinity" A "secretFiles" BOOL). */}}
{{- define "ncps.taskPod" -}}
{{- $ := .root -}}
metadata:
  {{- with .task.job.annotations }}
  annotations: {{- toYaml . | nindent 4 }}
  {{- end }}
  labels: {{- include "ncps.taskLabels" (list $ .component) | nindent 4 }}
spec:
  # Failed pods stay (with their logs); the Job's backoffLimit says how often it is retried.
  restartPolicy: Never
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets: {{- toYaml . | nindent 4 }}
  {{- end }}
  serviceAccountName: {{ .serviceAccount }}
  automountServiceAccountToken: {{ $.Values.serviceAccount.automountServiceAccountToken }}
  {{- with $.Values.podSecurityContext }}
  securityContext: {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    {{- include "ncps.taskContainer" (dict "root" $ "name" .name "args" .args "resources" .task.resources "securityContext" .task.securityContext "secret" .secret "secretFiles" .secretFiles) | nindent 4 }}
  volumes: {{- include "ncps.volumes" (dict "root" $ "configMap" .configMap "secret" .secret "claims" true "secretFiles" .secretFiles) | nindent 4 }}
  {{- with .task.job.nodeSelector }}
  nodeSelector: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .affinity }}
  affinity: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .task.job.tolerations }}
  tolerations: {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Refuses combinations that cannot work, with the reason. */}}
{{- define "ncps.validate" -}}
{{- $c := .Values.config -}}
{{- if not (has .Values.mode (list "statefulset" "deployment")) }}
{{- fail (printf "mode must be \"statefulset\" or \"deployment\", not %q" .Values.mode) }}
{{- end }}
{{- if eq $c.database.type "mysql" }}
{{- fail "config.database.type: MySQL is not supported by this ncps. Use PostgreSQL (config.database.type=postgresql); docs/kubernetes.md says how to move a Go ncps database over." }}
{{- end }}
{{- if not (has $c.database.type (list "sqlite" "postgresql")) }}
{{- fail (printf "config.database.type must be \"sqlite\" or \"postgresql\", not %q" $c.database.type) }}
{{- end }}
{{- if not (has $c.storage.type (list "local" "s3")) }}
{{- fail (printf "config.storage.type must be \"local\" or \"s3\", not %q" $c.storage.type) }}
{{- end }}
{{- if and (eq $c.storage.type "s3") (not $c.storage.s3.bucket) }}
{{- fail "S3 storage needs a bucket (config.storage.s3.bucket)" }}
{{- end }}
{{- if and (eq $c.storage.type "s3") (not $c.storage.s3.existingSecret) (or $c.storage.s3.accessKeyId $c.storage.s3.secretAccessKey) (not (and $c.storage.s3.accessKeyId $c.storage.s3.secretAccessKey)) }}
{{- fail "config.storage.s3: set both accessKeyId and secretAccessKey, or neither (the AWS default credential chain), or existingSecret" }}
{{- end }}
{{- if eq $c.database.type "postgresql" }}
{{- if and $c.database.postgresql.password $c.database.postgresql.existingSecret }}
{{- fail "config.database.postgresql: set either password (the chart builds the URL) or existingSecret (a Secret with the full URL under \"database-url\"), not both" }}
{{- end }}
{{- if and (not $c.database.postgresql.existingSecret) (not $c.database.postgresql.host) }}
{{- fail "PostgreSQL needs a host (config.database.postgresql.host) or an existingSecret with the URL" }}
{{- end }}
{{- end }}
{{- if not $c.upstream.caches }}
{{- fail "at least one upstream cache is needed (config.upstream.caches)" }}
{{- end }}
{{- $keys := 0 }}
{{- range $c.upstream.caches }}{{ if or .publicKey .publicKeys }}{{ $keys = add1 $keys }}{{ end }}{{ end }}
{{- if eq $keys 0 }}
{{- fail "config.upstream.caches: give at least one publicKey; this ncps serves only narinfos signed by a key it trusts" }}
{{- end }}
{{- if and $c.redis.enabled (not $c.redis.addresses) }}
{{- fail "config.redis.enabled needs config.redis.addresses" }}
{{- end }}
{{- if not (has .Values.migration.mode (list "job" "argocd" "initContainer")) }}
{{- fail (printf "migration.mode must be \"job\", \"argocd\" or \"initContainer\", not %q" .Values.migration.mode) }}
{{- end }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- if not (include "ncps.redisEnabled" .) }}
{{- fail "more than one replica needs Redis for its locks (config.redis.enabled=true)" }}
{{- end }}
{{- if include "ncps.sqlite" . }}
{{- fail "more than one replica cannot share an SQLite database: use PostgreSQL (config.database.type=postgresql)" }}
{{- end }}
{{- if and (eq $c.storage.type "local") (not (include "ncps.volumeShared" .)) }}
{{- fail "more than one replica needs storage they all share: S3 (config.storage.type=s3), or a ReadWriteMany volume (persistence.accessModes [ReadWriteMany] with mode=deployment or an existingClaim)" }}
{{- end }}
{{- end }}
{{- if and .Values.fsck.enabled (include "ncps.storageVolume" .) (not (include "ncps.persistent" .)) }}
{{- fail "fsck.enabled needs persistent storage: the fsck pod cannot see another pod's emptyDir (config.storage.local.persistence.enabled)" }}
{{- end }}
{{- end }}

{{/* Annotations of the migration hook's objects: Helm hooks (mode job) or Argo CD PreSync hooks
(mode argocd). Call with (list $ WEIGHT DELETE-POLICY). */}}
{{- define "ncps.migrationHook" -}}
{{- $ := index . 0 -}}
{{- if eq $.Values.migration.mode "argocd" }}
argocd.argoproj.io/hook: PreSync
argocd.argoproj.io/sync-wave: {{ index . 1 | quote }}
argocd.argoproj.io/hook-delete-policy: BeforeHookCreation
{{- else }}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: {{ index . 1 | quote }}
helm.sh/hook-delete-policy: {{ index . 2 }}
{{- end }}
{{- end }}

{{/* The migration hook runs before the release's objects are created or updated, so it brings
copies of what it needs (config file, Secret, ServiceAccount) with the new values. */}}
{{- define "ncps.migrationName" -}}
{{- printf "%s-migration" (include "ncps.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "ncps.migrationServiceAccount" -}}
{{- if .Values.serviceAccount.create }}{{ include "ncps.migrationName" . }}{{ else }}{{ include "ncps.serviceAccountName" . }}{{ end -}}
{{- end }}
