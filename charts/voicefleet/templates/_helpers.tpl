{{- define "voicefleet.name" -}}voicefleet-operator{{- end -}}

{{- define "voicefleet.fullname" -}}
{{- if contains "voicefleet" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-voicefleet" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "voicefleet.labels" -}}
app.kubernetes.io/name: {{ include "voicefleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: voicefleet
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "voicefleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voicefleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "voicefleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "voicefleet.fullname" .) .Values.serviceAccount.name }}
{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- define "voicefleet.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "voicefleet.workerImage" -}}
{{ .Values.worker.image.repository }}:{{ default .Chart.AppVersion .Values.worker.image.tag }}
{{- end -}}
