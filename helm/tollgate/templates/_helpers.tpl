{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: release-chart, or the release name alone when it already contains the chart
name. Kept to 54 characters so that "-headless" still fits in 63.
*/}}
{{- define "tollgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tollgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "tollgate.labels" -}}
helm.sh/chart: {{ include "tollgate.chart" . }}
{{ include "tollgate.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels: the pods of this release (also the peers allowed on the internal port).
*/}}
{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tollgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tollgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Headless Service on the internal port (per-pod addressing for owner forwarding).
*/}}
{{- define "tollgate.headlessServiceName" -}}
{{- printf "%s-headless" (include "tollgate.fullname" .) }}
{{- end }}

{{/*
The Secret holding the credentials: the chart's own, or secrets.existingSecret.
*/}}
{{- define "tollgate.secretName" -}}
{{- default (include "tollgate.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
Whether the replicas share a Redis ("true" or "").
*/}}
{{- define "tollgate.redisEnabled" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{- define "tollgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/*
Grace period: the configured value, else shutdownGraceMs rounded down to seconds + 10 s so that
in-flight streams finish before the kubelet's SIGKILL.
*/}}
{{- define "tollgate.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds }}
{{- .Values.terminationGracePeriodSeconds | int64 }}
{{- else }}
{{- add (div (.Values.config.server.shutdownGraceMs | int64) 1000) 10 }}
{{- end }}
{{- end }}

{{/*
Env var names holding upstream credentials, one per line, deduplicated, from the enabled providers'
accounts (apiKeyEnv).
*/}}
{{- define "tollgate.upstreamKeyEnvNames" -}}
{{- $seen := dict }}
{{- range $name, $provider := .Values.config.providers }}
{{- if dig "enabled" true $provider }}
{{- range $provider.accounts }}
{{- if and .apiKeyEnv (not (hasKey $seen .apiKeyEnv)) }}
{{- $_ := set $seen .apiKeyEnv true }}
{{ .apiKeyEnv }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Fails the render on settings the gateway would refuse or silently mishandle.
*/}}
{{- define "tollgate.validate" -}}
{{- $replicas := ternary (int .Values.autoscaling.maxReplicas) (int .Values.replicaCount) .Values.autoscaling.enabled }}
{{- if and (gt $replicas 1) (not (include "tollgate.redisEnabled" .)) }}
{{- fail "tollgate: more than one replica needs a shared Redis: set redis.url (or redis.existingSecret), or replicaCount=1 to try it on the embedded store" }}
{{- end }}
{{- if not (has .Values.advertise.mode (list "podIP" "dns")) }}
{{- fail "tollgate: advertise.mode must be podIP or dns" }}
{{- end }}
{{- $enabled := 0 }}
{{- range $name, $provider := .Values.config.providers }}
{{- if not (has $name (list "openai" "anthropic" "chatgpt")) }}
{{- fail (printf "tollgate: config.providers.%s: unknown provider (openai, anthropic, chatgpt)" $name) }}
{{- end }}
{{- if dig "enabled" true $provider }}
{{- $enabled = add1 $enabled }}
{{- if not $provider.accounts }}
{{- fail (printf "tollgate: config.providers.%s.accounts: at least one account is required" $name) }}
{{- end }}
{{- range $i, $account := $provider.accounts }}
{{- if eq (empty $account.apiKeyEnv) (empty $account.apiKeyFile) }}
{{- fail (printf "tollgate: config.providers.%s.accounts[%d]: exactly one of apiKeyEnv or apiKeyFile is required" $name $i) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq $enabled 0 }}
{{- fail "tollgate: config.providers: enable at least one provider" }}
{{- end }}
{{- end }}
