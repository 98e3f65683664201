{{/* Names, labels and the pieces every workload shares (controller, bot, provider gateway).
A new component reuses these: one Deployment template plus a values block. */}}

{{- define "countersign.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "countersign.fullname" -}}
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

{{/* The name of a component's objects: "<fullname>-<component>". */}}
{{- define "countersign.componentName" -}}
{{- printf "%s-%s" (include "countersign.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "countersign.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "countersign.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: countersign
{{- end -}}

{{/* Labels of a component's objects; call with (dict "root" $ "component" "bot"). */}}
{{- define "countersign.componentLabels" -}}
{{ include "countersign.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Selector labels of a component: stable across upgrades. */}}
{{- define "countersign.selectorLabels" -}}
app.kubernetes.io/name: {{ include "countersign.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "countersign.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "countersign.serviceAccountName" -}}
{{- $values := index .root.Values .component -}}
{{- default (include "countersign.componentName" .) $values.serviceAccount.name -}}
{{- end -}}

{{/* The bot's listener speaks HTTPS when it serves the admission webhook. */}}
{{- define "countersign.botScheme" -}}
{{- if .Values.admissionWebhook.enabled -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}

{{- define "countersign.tlsSecretName" -}}
{{- if eq .Values.admissionWebhook.certificate.source "existingSecret" -}}
{{- .Values.admissionWebhook.certificate.existingSecret -}}
{{- else -}}
{{- printf "%s-bot-tls" (include "countersign.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Environment every server gets: logging, and its own pod's name and namespace (Lease
identity, Event reporter). */}}
{{- define "countersign.commonEnv" -}}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
- name: COUNTERSIGN_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/* The GitHub App id from the Secret, and the flags locating the API. */}}
{{- define "countersign.githubEnv" -}}
- name: GITHUB_APP_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.github.existingSecret }}
      key: {{ .Values.github.appIdKey }}
- name: GITHUB_APP_PRIVATE_KEY_FILE
  value: /etc/countersign/github/{{ .Values.github.privateKeyKey }}
- name: GITHUB_API_URL
  value: {{ .Values.github.apiUrl | quote }}
{{- end -}}

{{/* Pod-level settings shared by every workload; call with (dict "root" $ "values" $values). */}}
{{- define "countersign.podSpecCommon" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The one namespace the controller watches, or "" for all. The provider gateway serves
the attempts the controller creates, so it follows the same scope. */}}
{{- define "countersign.watchedNamespace" -}}
{{- .Values.controller.watchNamespace -}}
{{- end -}}

{{/* Namespaces where agent pods can run: the watched one, else controller.agentNamespaces
(the controller may create attempt Secrets only there). Empty (as JSON) = any namespace, with
controller.secretsClusterWide or when none is listed yet. */}}
{{- define "countersign.agentNamespaces" -}}
{{- $v := .Values.controller -}}
{{- if $v.watchNamespace -}}
{{- list $v.watchNamespace | toJson -}}
{{- else if $v.secretsClusterWide -}}
{{- list | toJson -}}
{{- else -}}
{{- $v.agentNamespaces | default list | toJson -}}
{{- end -}}
{{- end -}}

{{/* The provider gateway's URL as agent pods reach it: its Service, whose port is the
container's (agent pods' NetworkPolicies allow this port at the gateway's pods). */}}
{{- define "countersign.gatewayUrl" -}}
{{- $c := dict "root" . "component" "gateway" -}}
{{- printf "http://%s.%s.svc:%d" (include "countersign.componentName" $c) .Release.Namespace (int .Values.gateway.port) -}}
{{- end -}}

{{/* The gateway pods' selector labels as `k=v,k=v` (the controller's --gateway-pod-labels,
which its agent pods' NetworkPolicies select). */}}
{{- define "countersign.gatewayPodLabels" -}}
{{- $labels := include "countersign.selectorLabels" (dict "root" . "component" "gateway") | fromYaml -}}
{{- $pairs := list -}}
{{- range $key := keys $labels | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $key (get $labels $key)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
