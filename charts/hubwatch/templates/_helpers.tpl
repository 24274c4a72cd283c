{{- define "hubwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hubwatch.fullname" -}}
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

{{- define "hubwatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hubwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hubwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hubwatch.labels" -}}
helm.sh/chart: {{ include "hubwatch.chart" . }}
{{ include "hubwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "hubwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hubwatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hubwatch.secretName" -}}
{{- if .Values.secrets.create }}{{ include "hubwatch.fullname" . }}{{ else }}{{ .Values.secrets.existingSecret }}{{ end }}
{{- end }}

{{/* The environment variable holding a hub's token, password or routing key: HUB_<NAME>_TOKEN. */}}
{{- define "hubwatch.hubEnv" -}}
{{- printf "HUB_%s_%s" (.name | upper | replace "-" "_") .what }}
{{- end }}

{{/* The key of the chart's Secret an environment variable comes from: HUB_TEMPLE_TOKEN -> hub-temple-token. */}}
{{- define "hubwatch.envKey" -}}
{{- . | lower | replace "_" "-" }}
{{- end }}

{{/*
hubwatch's config file: values.config as written (the daemon's own keys), with what the chart owns added —
the listen addresses, state_path, public_url (unless given), web (from web), high_availability (from
highAvailability) — and an {env: …} reference for each secret the config leaves out and the chart's Secret
holds (docs/kubernetes.md lists them).
*/}}
{{- define "hubwatch.config" -}}
{{- $c := deepCopy (default dict .Values.config) }}
{{- range $key := list "listen" "metrics_listen" "state_path" "high_availability" "web" }}
{{- if hasKey $c $key }}{{ fail (printf "config.%s is the chart's to set (docs/kubernetes.md): leave it out of config" $key) }}{{ end }}
{{- end }}
{{- $_ := set $c "listen" "0.0.0.0:9464" }}
{{- $_ := set $c "metrics_listen" "0.0.0.0:9465" }}
{{- $_ := set $c "state_path" "/var/lib/hubwatch/state.db" }}
{{- if not (hasKey $c "public_url") }}
{{- $_ := set $c "public_url" (printf "http://%s.%s.svc:%v/" (include "hubwatch.fullname" .) .Release.Namespace .Values.service.port) }}
{{- end }}
{{- $web := dict }}
{{- with .Values.web.basicAuthUsers }}
{{- $users := dict }}
{{- range $i, $name := keys . | sortAlpha }}{{ $_ := set $users $name (dict "env" (printf "HUBWATCH_WEB_USER_%d" $i)) }}{{ end }}
{{- $_ := set $web "basic_auth_users" $users }}
{{- end }}
{{- if .Values.web.tlsSecret }}{{ $_ := set $web "tls" (dict "cert_file" "/etc/hubwatch-tls/tls.crt" "key_file" "/etc/hubwatch-tls/tls.key") }}{{ end }}
{{- $service := printf "%s.%s" (include "hubwatch.fullname" .) .Release.Namespace }}
{{- $hosts := list (include "hubwatch.fullname" .) $service (printf "%s.svc" $service) (printf "%s.svc.cluster.local" $service) }}
{{- $_ := set $web "hosts" (concat $hosts (default list .Values.web.hosts)) }}
{{- with .Values.web.trustedProxies }}{{ $_ := set $web "trusted_proxies" . }}{{ end }}
{{- $_ := set $c "web" $web }}
{{- with .Values.highAvailability }}{{ if .enabled }}
{{- $_ := set $c "high_availability" (dict "namespace" $.Release.Namespace "lease" (printf "%s-leader" (include "hubwatch.fullname" $)) "state_secret" (printf "%s-state" (include "hubwatch.fullname" $)) "lease_duration" .leaseDuration "renew_deadline" .renewDeadline "retry_period" .retryPeriod) }}
{{- end }}{{ end }}
{{- if hasKey $c "pagerduty" }}
{{- $pd := default dict $c.pagerduty }}
{{- if not (hasKey $pd "routing_key") }}{{ $_ := set $pd "routing_key" (dict "env" "PAGERDUTY_ROUTING_KEY") }}{{ end }}
{{- if and (hasKey $pd "from_email") (not (hasKey $pd "api_token")) }}{{ $_ := set $pd "api_token" (dict "env" "PAGERDUTY_API_TOKEN") }}{{ end }}
{{- $_ := set $c "pagerduty" $pd }}
{{- end }}
{{- with $c.webhook }}{{ if $.Values.secrets.webhookAuthorization }}
{{- $headers := default dict .headers }}
{{- if not (hasKey $headers "Authorization") }}{{ $_ := set $headers "Authorization" (dict "env" "HUBWATCH_WEBHOOK_AUTHORIZATION") }}{{ end }}
{{- $_ := set . "headers" $headers }}
{{- end }}{{ end }}
{{- if and (hasKey (default dict $c.kubernetes) "discovery") $.Values.secrets.discoveryToken }}
{{- $d := default dict $c.kubernetes.discovery }}
{{- if not (or (hasKey $d "token") (hasKey $d "token_secret")) }}{{ $_ := set $d "token" (dict "env" "HUBWATCH_DISCOVERY_TOKEN") }}{{ end }}
{{- $_ := set $c.kubernetes "discovery" $d }}
{{- end }}
{{- range $hub := default list $c.hubs }}
{{- if not (hasKey $hub "token") }}{{ $_ := set $hub "token" (dict "env" (include "hubwatch.hubEnv" (dict "name" $hub.name "what" "TOKEN"))) }}{{ end }}
{{- with $hub.login }}{{ if and (eq (toString .method) "form") (not (hasKey . "password")) }}
{{- $_ := set . "password" (dict "env" (include "hubwatch.hubEnv" (dict "name" $hub.name "what" "PASSWORD"))) }}
{{- end }}{{ end }}
{{- if hasKey $.Values.secrets.hubRoutingKeys (toString $hub.name) }}
{{- $paging := default dict $hub.pagerduty }}
{{- if not (hasKey $paging "routing_key") }}{{ $_ := set $paging "routing_key" (dict "env" (include "hubwatch.hubEnv" (dict "name" $hub.name "what" "ROUTING_KEY"))) }}{{ end }}
{{- $_ := set $hub "pagerduty" $paging }}
{{- end }}
{{- end }}
{{- toYaml $c }}
{{- end }}

{{/* Every environment variable the config's secrets name, one per line (the Deployment maps each to a key). */}}
{{- define "hubwatch.secretEnvs" -}}
{{- $c := fromYaml (include "hubwatch.config" .) }}
{{- $refs := list }}
{{- with $c.pagerduty }}{{ $refs = append (append $refs .routing_key) (default dict .api_token) }}{{ end }}
{{- with $c.webhook }}{{ range $name, $ref := default dict .headers }}{{ $refs = append $refs $ref }}{{ end }}{{ end }}
{{- with $c.kubernetes }}{{ with .discovery }}{{ $refs = append $refs (default dict .token) }}{{ end }}{{ end }}
{{- range $hub := default list $c.hubs }}
{{- $refs = append $refs $hub.token }}
{{- with $hub.login }}{{ $refs = append $refs (default dict .password) }}{{ end }}
{{- with $hub.pagerduty }}
{{- $refs = append $refs (default dict .routing_key) }}
{{- range $kind, $over := default dict .kinds }}{{ $refs = append $refs (default dict $over.routing_key) }}{{ end }}
{{- end }}
{{- end }}
{{- range $ref := $refs }}{{ with (default dict $ref).env }}{{ . }}
{{ end }}{{ end }}
{{- end }}

{{/* The namespaces hubwatch reads: every hub's, and discovery's. */}}
{{- define "hubwatch.namespaces" -}}
{{- $c := fromYaml (include "hubwatch.config" .) }}
{{- $namespaces := list }}
{{- range default list $c.hubs }}{{ if .namespace }}{{ $namespaces = append $namespaces .namespace }}{{ end }}{{ end }}
{{- $discovery := include "hubwatch.discovery" . | fromYaml }}
{{- range default list $discovery.namespaces }}{{ $namespaces = append $namespaces . }}{{ end }}
{{- $namespaces | uniq | sortAlpha | join "," }}
{{- end }}

{{/* Discovery as the config has it, when it is on (empty otherwise), with held_token and token_secret worked out. */}}
{{- define "hubwatch.discovery" -}}
{{- $c := fromYaml (include "hubwatch.config" .) }}
{{- $d := dig "kubernetes" "discovery" nil $c }}
{{- if and (hasKey (default dict $c.kubernetes) "discovery") (ne (toString (dig "enabled" true (default dict $d))) "false") }}
{{- $d = default dict $d }}
{{- $_ := set $d "held_token" (hasKey $d "token") }}
{{- $_ := set $d "token_secret" (default "hubwatch" $d.token_secret) }}
{{- toYaml $d }}
{{- end }}
{{- end }}

{{/* Whole seconds in a duration as the config writes them (90s, 2m, 1h30m; milliseconds are dropped). */}}
{{- define "hubwatch.seconds" -}}
{{- $total := 0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d)" (toString .) -1 -}}
{{- $n := regexFind "^[0-9]+" . | atoi -}}
{{- $unit := regexFind "[a-z]+$" . -}}
{{- if eq $unit "s" }}{{ $total = add $total $n }}{{ else if eq $unit "m" }}{{ $total = add $total (mul $n 60) }}{{ else if eq $unit "h" }}{{ $total = add $total (mul $n 3600) }}{{ else if eq $unit "d" }}{{ $total = add $total (mul $n 86400) }}{{ end -}}
{{- end -}}
{{- $total -}}
{{- end -}}
