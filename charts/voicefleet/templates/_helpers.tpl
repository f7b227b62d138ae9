{{- define "voicefleet.name" -}}voicefleet-operator{{- end -}}

{{- /* The objects' names. The app.kubernetes.io/name label stays voicefleet-operator
whatever nameOverride says: it is Prometheus' job label, which the dashboards and alerts
select on. */ -}}
{{- define "voicefleet.fullname" -}}
{{- if .Values.fullnameOverride -}}{{ .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else -}}
{{- $name := default "voicefleet" .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}
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

{{- /* repository@digest when a digest is set (what was tested is what runs), else
repository:tag (default: the chart's appVersion). */ -}}
{{- define "voicefleet.imageRef" -}}
{{- if .image.digest -}}{{ .image.repository }}@{{ .image.digest }}
{{- else -}}{{ .image.repository }}:{{ default .appVersion .image.tag }}{{- end -}}
{{- end -}}

{{- define "voicefleet.image" -}}
{{ include "voicefleet.imageRef" (dict "image" .Values.image "appVersion" .Chart.AppVersion) }}
{{- end -}}

{{- define "voicefleet.workerImage" -}}
{{ include "voicefleet.imageRef" (dict "image" .Values.worker.image "appVersion" .Chart.AppVersion) }}
{{- end -}}


{{- /* The operator's --worker-ingress: NetworkPolicy ingress rules for every VoiceAgent's
workers. The operator's pods and Prometheus reach the metrics port (/metrics, /sessions,
/ready); then networkPolicy.extraIngress, as written. */ -}}
{{- define "voicefleet.workerIngress" -}}
{{- $np := .Values.networkPolicy -}}
{{- $operator := dict "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" .Release.Namespace)) "podSelector" (dict "matchLabels" (include "voicefleet.selectorLabels" . | fromYaml)) -}}
{{- $prometheus := dict "namespaceSelector" $np.prometheus.namespaceSelector "podSelector" $np.prometheus.podSelector -}}
{{- $rule := dict "from" (list $operator $prometheus) "ports" (list (dict "port" "metrics" "protocol" "TCP")) -}}
{{- toJson (concat (list $rule) $np.extraIngress) -}}
{{- end -}}
{{- /* The call page's labels: its own name, so neither selector matches the other's pods. */ -}}
{{- define "voicefleet.callPageSelectorLabels" -}}
app.kubernetes.io/name: voicefleet-callpage
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "voicefleet.callPageLabels" -}}
{{ include "voicefleet.callPageSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: voicefleet
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
