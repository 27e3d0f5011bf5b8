{{/* Names, labels and the rendered gateway config. */}}

{{- define "tiergate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tiergate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tiergate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object, less the selector's: combine with tiergate.selectorLabels or engineSelectorLabels. */}}
{{- define "tiergate.commonLabels" -}}
helm.sh/chart: {{ include "tiergate.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tiergate
{{- end -}}

{{- define "tiergate.labels" -}}
{{ include "tiergate.commonLabels" . }}
app.kubernetes.io/name: {{ include "tiergate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tiergate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tiergate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "tiergate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tiergate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tiergate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret the gateway's TIERGATE_* secrets come from: the existing one, the chart's own, or none. */}}
{{- define "tiergate.secretName" -}}
{{- $s := .Values.secrets -}}
{{- if $s.existingSecret -}}
{{- $s.existingSecret -}}
{{- else if or $s.adminTokens $s.databaseUrl $s.redisUrl $s.engineApiKey -}}
{{- include "tiergate.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* An engine's values: engineDefaults with the entry merged over them. Call with (dict "root" $ "engine" .) */}}
{{- define "tiergate.engine" -}}
{{- $e := mergeOverwrite (deepCopy .root.Values.engineDefaults) (deepCopy .engine) -}}
{{- toYaml $e -}}
{{- end -}}

{{/* An engine's resource and Service name. Call with (dict "root" $ "engine" .) */}}
{{- define "tiergate.engineFullname" -}}
{{- $room := sub 55 (len .engine.name) | int -}}
{{- printf "%s-engine-%s" (include "tiergate.fullname" .root | trunc $room | trimSuffix "-") .engine.name -}}
{{- end -}}

{{- define "tiergate.engineSelectorLabels" -}}
app.kubernetes.io/name: {{ include "tiergate.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: engine
tiergate.io/engine: {{ .engine.name }}
{{- end -}}

{{/* The enabled engines' pools, each with the URLs of its engines' Services: {"fast": ["http://...:8000"]}. */}}
{{- define "tiergate.enginePools" -}}
{{- $pools := dict -}}
{{- range .Values.engines -}}
{{- if dig "enabled" true . -}}
{{- $e := include "tiergate.engine" (dict "root" $ "engine" .) | fromYaml -}}
{{- $url := printf "http://%s:%d" (include "tiergate.engineFullname" (dict "root" $ "engine" .)) (int $e.port) -}}
{{- $_ := set $pools $e.pool (append (get $pools $e.pool | default (list)) $url) -}}
{{- end -}}
{{- end -}}
{{- toYaml $pools -}}
{{- end -}}

{{/* The gateway's tiergate.yaml: .Values.config with the server address, the engine pools and the book. */}}
{{- define "tiergate.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $server := get $config "server" | default (dict) -}}
{{- $_ := set $server "host" (get $server "host" | default "0.0.0.0") -}}
{{- $_ := set $server "port" (int .Values.gateway.port) -}}
{{- $_ := set $config "server" $server -}}
{{- $pools := get $config "pools" | default (dict) -}}
{{- range $name, $urls := include "tiergate.enginePools" . | fromYaml -}}
{{- $pool := get $pools $name | default (dict) -}}
{{- if not (get $pool "replicas") -}}
{{- $_ := set $pool "replicas" $urls -}}
{{- end -}}
{{- $_ := set $pools $name $pool -}}
{{- end -}}
{{- range $name, $pool := $pools -}}
{{- if not (get ($pool | default (dict)) "replicas") -}}
{{- fail (printf "config.pools.%s has no replicas: add an enabled engine with `pool: %s`, or list its replicas" $name $name) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $config "pools" $pools -}}
{{- if and .Values.database.sqlite (not (dig "database" "url" "" $config)) -}}
{{- $database := get $config "database" | default (dict) -}}
{{- $_ := set $database "url" "sqlite:////var/lib/tiergate/tiergate.sqlite3" -}}
{{- $_ := set $config "database" $database -}}
{{- end -}}
{{- if .Values.priceBook -}}
{{- $pricing := get $config "pricing" | default (dict) -}}
{{- $_ := set $pricing "book" "/etc/tiergate/prices.yaml" -}}
{{- $_ := set $config "pricing" $pricing -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Where the database URL comes from: "sqlite" (database.sqlite, trying it out), "config" (config.database.url,
     a PostgreSQL URL without its password, which the Secret's database-url may still bring), "secret" (only the
     Secret: its database-url key is then not optional, so a Secret without it stops the pod instead of leaving
     it on SQLite). */}}
{{- define "tiergate.databaseSource" -}}
{{- if .Values.database.sqlite -}}
sqlite
{{- else if dig "database" "url" "" .Values.config -}}
config
{{- else -}}
secret
{{- end -}}
{{- end -}}

{{/* The most `tiergate serve` takes to stop after SIGTERM, in seconds: uvicorn finishes open requests and
     streams (timeout_graceful_shutdown, 30, in gateway/cli.py), then the ledger writer drains the journal into
     the database (LedgerWriter's close_timeout_s, 10, in pricing/journal_drain.py). tests/deploy/test_helm.py
     holds these to the code. */}}
{{- define "tiergate.stopSeconds" -}}
{{- add 30 10 -}}
{{- end -}}

{{/* Refuse what would silently misbehave. */}}
{{- define "tiergate.validate" -}}
{{- $replicas := int .Values.gateway.replicaCount -}}
{{- $scaled := or .Values.autoscaling.enabled (gt $replicas 1) -}}
{{- $db := dig "database" "url" "" .Values.config | toString -}}
{{- $secretDb := .Values.secrets.databaseUrl | toString -}}
{{- if .Values.database.sqlite -}}
{{- if $scaled -}}
{{- fail "more than one gateway replica (gateway.replicaCount > 1 or autoscaling.enabled) needs PostgreSQL, not database.sqlite: each pod would keep its own tenants and keys" -}}
{{- end -}}
{{- if or (hasPrefix "postgres" $db) $secretDb -}}
{{- fail "database.sqlite=true and a PostgreSQL URL (config.database.url or secrets.databaseUrl) are both set: choose one" -}}
{{- end -}}
{{- else -}}
{{- if and $db (not (hasPrefix "postgres" $db)) -}}
{{- fail "config.database.url is not PostgreSQL: SQLite keeps tenants, keys, budgets and the ledger inside the pod. Set database.sqlite=true to try tiergate out that way anyway" -}}
{{- end -}}
{{- if and $secretDb (not (hasPrefix "postgres" $secretDb)) -}}
{{- fail "secrets.databaseUrl is not PostgreSQL (postgresql://USER:PASSWORD@HOST:5432/DB)" -}}
{{- end -}}
{{- if not (or $db $secretDb .Values.secrets.existingSecret) -}}
{{- fail "tiergate needs PostgreSQL for tenants, keys, budgets and the ledger: set secrets.existingSecret to a Secret whose key database-url is postgresql://USER:PASSWORD@HOST:5432/DB (recommended: the password stays out of the release), or secrets.databaseUrl, or config.database.url. To try tiergate out without PostgreSQL, set database.sqlite=true (SQLite inside the pod, one replica)" -}}
{{- end -}}
{{- end -}}
{{- $stop := include "tiergate.stopSeconds" . | int -}}
{{- $needed := add (int .Values.gateway.preStopSleepSeconds) $stop 5 -}}
{{- if lt (int .Values.gateway.terminationGracePeriodSeconds) (int $needed) -}}
{{- fail (printf "gateway.terminationGracePeriodSeconds must be at least %d: gateway.preStopSleepSeconds (%d), then up to %d s for tiergate serve to finish open requests and streams and drain the ledger journal, and 5 s to spare; a shorter grace kills the pod with rows not yet in the ledger" (int $needed) (int .Values.gateway.preStopSleepSeconds) $stop) -}}
{{- end -}}
{{- $names := dict -}}
{{- range .Values.engines -}}
{{- if hasKey $names .name -}}
{{- fail (printf "engines: the name %q appears twice" .name) -}}
{{- end -}}
{{- $_ := set $names .name true -}}
{{- if not (regexMatch "^[a-z][a-z0-9_]*$" (toString .pool)) -}}
{{- fail (printf "engines.%s.pool: %q must match ^[a-z][a-z0-9_]*$ (it names a config key and a TIERGATE_POOLS__<POOL>__ variable)" .name (toString .pool)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
