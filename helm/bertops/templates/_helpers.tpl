{{/* Labels on every object of the release. */}}
{{- define "bertops.labels" -}}
app.kubernetes.io/part-of: bertops
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* checkov renders charts into the "default" namespace; the real one is given at install. */}}
{{- define "bertops.checkovNamespaceSkip" -}}
checkov.io/skip1: CKV_K8S_21=The namespace is the release namespace given to helm install -n; checkov renders charts into default
{{- end }}

{{/* The ServingRuntime's image: the CUDA or CPU repository at image.tag (default: the chart's appVersion). */}}
{{- define "bertops.image" -}}
{{- printf "%s:%s" (ternary .Values.image.cuda .Values.image.cpu .Values.gpu.enabled) (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* "true" when the Istio policies are created: authorization.enabled true, or auto where the cluster serves security.istio.io/v1. */}}
{{- define "bertops.authorizationEnabled" -}}
{{- $enabled := .Values.authorization.enabled }}
{{- if or (eq (toString $enabled) "true") (and (eq (toString $enabled) "auto") (.Capabilities.APIVersions.Has "security.istio.io/v1")) }}true{{ end }}
{{- end }}

{{/* The Istio policies' workload selector: the endpoint's predictor pods, as KServe labels them. */}}
{{- define "bertops.predictorSelector" -}}
selector:
  matchLabels:
    serving.kserve.io/inferenceservice: {{ .Values.inferenceService.name }}
    component: predictor
{{- end }}
