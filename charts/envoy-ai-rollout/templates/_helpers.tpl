{{/* The chart's name. */}}
{{- define "envoy-ai-rollout.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name alone when it already holds the chart's. */}}
{{- define "envoy-ai-rollout.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "envoy-ai-rollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "envoy-ai-rollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "envoy-ai-rollout.labels" -}}
{{ include "envoy-ai-rollout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "envoy-ai-rollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "envoy-ai-rollout.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "envoy-ai-rollout.policiesConfigMap" -}}
{{- default (printf "%s-policies" (include "envoy-ai-rollout.fullname" .)) .Values.policies.existingConfigMap -}}
{{- end -}}

{{/* Combinations the schema cannot express, refused with a message that says what to do. */}}
{{- define "envoy-ai-rollout.validate" -}}
{{- if and .Values.policies.existingConfigMap .Values.policies.files -}}
{{- fail "policies.files and policies.existingConfigMap are exclusive: give the policies inline or name your ConfigMap, not both" -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail "leaderElection.enabled=false with replicaCount > 1 would let several replicas write the same routes: enable leader election or set replicaCount=1" -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.service.enabled) -}}
{{- fail "serviceMonitor.enabled needs metrics.service.enabled: a ServiceMonitor selects the metrics Service" -}}
{{- end -}}
{{- end -}}
