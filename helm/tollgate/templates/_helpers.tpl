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
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
Grace period: the configured value, else the preStop sleep + shutdownGraceMs (rounded up to seconds)
+ 5 s, so that in-flight streams finish before the kubelet's SIGKILL.
*/}}
{{- define "tollgate.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds }}
{{- .Values.terminationGracePeriodSeconds | int64 }}
{{- else }}
{{- add (.Values.preStopSleepSeconds | int64) (div (add (.Values.config.server.shutdownGraceMs | int64) 999) 1000) 5 }}
{{- end }}
{{- end }}

{{/*
TOLLGATE_ADVERTISE_URL: the pod's IP on the internal port, bracketed when it is IPv6.
*/}}
{{- define "tollgate.advertiseUrl" -}}
{{- $host := ternary "[$(POD_IP)]" "$(POD_IP)" (eq .Values.ipFamily "IPv6") }}
{{- printf "http://%s:%d" $host (.Values.config.server.internalPort | int64) }}
{{- end }}

{{/*
The heap limit in MiB for --max-old-space-size: heap.maxOldSpaceSizeMiB, else
heap.percentOfMemoryLimit of resources.limits.memory (a quantity: 512Mi, 1Gi, 1G, 536870912);
empty without either.
*/}}
{{- define "tollgate.maxOldSpaceSizeMiB" -}}
{{- if .Values.heap.maxOldSpaceSizeMiB }}
{{- .Values.heap.maxOldSpaceSizeMiB | int64 }}
{{- else }}
{{- $limit := dig "limits" "memory" "" .Values.resources | toString }}
{{- if $limit }}
{{- $match := regexFindAll "^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$" $limit 1 }}
{{- if not $match }}
{{- fail (printf "tollgate: resources.limits.memory %q: use a whole number with an optional unit (Ki, Mi, Gi, Ti, k, M, G, T), or set heap.maxOldSpaceSizeMiB" $limit) }}
{{- end }}
{{- $unit := regexReplaceAll "^[0-9]+" $limit "" }}
{{- $factors := dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 }}
{{- $bytes := mul (regexFind "^[0-9]+" $limit | int64) (get $factors $unit) }}
{{- div (mul $bytes (.Values.heap.percentOfMemoryLimit | int64)) 104857600 }}
{{- end }}
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
Where the Deployment mounts the auth.json of the chatgpt account at this index (authSecret).
*/}}
{{- define "tollgate.authFilePath" -}}
{{- printf "/etc/tollgate-chatgpt/%d/auth.json" (int .) }}
{{- end }}

{{/*
The enabled chatgpt provider's authSecret accounts as a YAML list of {index, secret, key}.
*/}}
{{- define "tollgate.authAccounts" -}}
{{- $out := list }}
{{- $chatgpt := .Values.config.providers.chatgpt | default dict }}
{{- if dig "enabled" true $chatgpt }}
{{- range $i, $account := $chatgpt.accounts }}
{{- if $account.authSecret }}
{{- $out = append $out (dict "index" $i "secret" $account.authSecret "key" ($account.authSecretKey | default "auth.json")) }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
Fails the render on settings the gateway would refuse or silently mishandle.
*/}}
{{- define "tollgate.validate" -}}
{{- $replicas := ternary (int .Values.autoscaling.maxReplicas) (int .Values.replicaCount) .Values.autoscaling.enabled }}
{{- if and (gt $replicas 1) (not (include "tollgate.redisEnabled" .)) }}
{{- fail "tollgate: more than one replica needs a shared Redis: set redis.url (or redis.existingSecret), or replicaCount=1 to try it on the embedded store" }}
{{- end }}
{{- if and .Values.redis.url .Values.secrets.existingSecret (not .Values.redis.existingSecret) }}
{{- fail "tollgate: redis.url with secrets.existingSecret would put the Redis URL (and its password) in the Deployment: put REDIS_URL in a Secret and name it in redis.existingSecret" }}
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
{{- $logins := list $account.authFile $account.authSecret | compact }}
{{- if and $logins (ne $name "chatgpt") }}
{{- fail (printf "tollgate: config.providers.%s.accounts[%d]: only ChatGPT accounts log in with a Codex auth.json (authFile, authSecret)" $name $i) }}
{{- end }}
{{- if ne (len (list $account.apiKeyEnv $account.apiKeyFile $account.authFile $account.authSecret | compact)) 1 }}
{{- fail (printf "tollgate: config.providers.%s.accounts[%d]: exactly one of apiKeyEnv, apiKeyFile, authFile or authSecret is required" $name $i) }}
{{- end }}
{{- if and $logins (not $.Values.secrets.existingSecret) (not $.Values.secrets.encryptionKey) }}
{{- fail (printf "tollgate: config.providers.%s.accounts[%d] logs in with a Codex auth.json: set secrets.encryptionKey (openssl rand -base64 32) or put TOLLGATE_ENCRYPTION_KEY in secrets.existingSecret" $name $i) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq $enabled 0 }}
{{- fail "tollgate: config.providers: enable at least one provider" }}
{{- end }}
{{- end }}
