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

{{/* The environment variable holding a hub's token or password: HUB_<NAME>_TOKEN. */}}
{{- define "hubwatch.hubEnv" -}}
{{- printf "HUB_%s_%s" (.name | upper | replace "-" "_") .what }}
{{- end }}

{{/* The namespaces hubwatch reads: every hub's, and discovery's. */}}
{{- define "hubwatch.namespaces" -}}
{{- $namespaces := list }}
{{- range .Values.hubs }}{{ if .namespace }}{{ $namespaces = append $namespaces .namespace }}{{ end }}{{ end }}
{{- if .Values.config.kubernetes.discovery.enabled }}
{{- range .Values.config.kubernetes.discovery.namespaces }}{{ $namespaces = append $namespaces . }}{{ end }}
{{- end }}
{{- $namespaces | uniq | sortAlpha | join "," }}
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
