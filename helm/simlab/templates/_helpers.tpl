{{/*
simlab chart helpers. The object names come from .Values.resourceNames (fixed, not release-
prefixed) because the subcharts' values refer to them and subchart values cannot be templated.
*/}}

{{- define "simlab.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "simlab.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object of ours. */}}
{{- define "simlab.labels" -}}
helm.sh/chart: {{ include "simlab.chart" . }}
app.kubernetes.io/name: {{ include "simlab.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: simlab
{{- end -}}

{{/* The collector's OTLP endpoint: telemetry.otlpEndpoint, else the bundled collector's Service. */}}
{{- define "simlab.otlpEndpoint" -}}
{{- if .Values.telemetry.otlpEndpoint -}}
{{- .Values.telemetry.otlpEndpoint -}}
{{- else -}}
{{- $collector := index .Values "opentelemetry-collector" -}}
{{- $port := ternary 4317 4318 (eq .Values.telemetry.otlpProtocol "grpc") -}}
{{- printf "http://%s:%d" $collector.fullnameOverride $port -}}
{{- end -}}
{{- end -}}

{{/* Tempo's HTTP API for Grafana: grafanaIntegration.datasource.tempoUrl, else the bundled Tempo. */}}
{{- define "simlab.tempoUrl" -}}
{{- if .Values.grafanaIntegration.datasource.tempoUrl -}}
{{- .Values.grafanaIntegration.datasource.tempoUrl -}}
{{- else -}}
{{- printf "http://%s:3200" .Values.tempo.fullnameOverride -}}
{{- end -}}
{{- end -}}

{{/* SIMLAB_RESULTS_URI: the object store when enabled, else results/ on the data volume. */}}
{{- define "simlab.resultsUri" -}}
{{- if .Values.storage.objectStore.enabled -}}
{{- .Values.storage.objectStore.resultsUri -}}
{{- else -}}
{{- printf "%s/results" (trimSuffix "/" .Values.storage.mountPath) -}}
{{- end -}}
{{- end -}}

{{/* OTEL_RESOURCE_ATTRIBUTES as k=v,k=v (sorted keys, so renders are stable). */}}
{{- define "simlab.resourceAttributes" -}}
{{- $attrs := dict "deployment.environment.name" .Values.environment "k8s.namespace.name" .Release.Namespace "service.namespace" "simlab" -}}
{{- range $key, $value := .Values.telemetry.resourceAttributes -}}
{{- $_ := set $attrs $key (toString $value) -}}
{{- end -}}
{{- $pairs := list -}}
{{- range $key := keys $attrs | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $key (get $attrs $key)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
