{{/*
Names and labels. Everything here is deterministic: no random values, no lookups, no timestamps,
so GitOps tools (ArgoCD, Flux) render the same manifests on every sync.
*/}}

{{- define "vigil.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vigil.fullname" -}}
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

{{- define "vigil.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vigil.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vigil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vigil.labels" -}}
helm.sh/chart: {{ include "vigil.chart" . }}
{{ include "vigil.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vigil
{{- end }}

{{- define "vigil.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vigil.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vigil.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "vigil.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{/*
The Leases the operator holds: one, or one per shard. The same names as the operator computes
(vigil.domain.sharding.Layout.lease_name): a selector group adds the first 8 hex digits of its sha256.
*/}}
{{- define "vigil.leaseGroup" -}}
{{- .Values.leaderElection.name }}{{ with .Values.sharding.selector }}-sel-{{ sha256sum . | trunc 8 }}{{ end }}
{{- end }}

{{- define "vigil.leaseNames" -}}
{{- $group := include "vigil.leaseGroup" . }}
{{- $shards := int .Values.sharding.shards }}
{{- if gt $shards 1 }}
{{- range $i := until $shards }}
- {{ printf "%s-shard-%d-of-%d" $group $i $shards | quote }}
{{- end }}
{{- else }}
- {{ $group | quote }}
{{- end }}
{{- end }}

{{/*
RBAC rules for the watched scope (a ClusterRole in all-namespaces mode, a Role per watched namespace
otherwise). Explicit verbs and resources only: no wildcards.
*/}}
{{- define "vigil.scopeRules" -}}
# The operator's custom resources: watched, annotated/finalized (patch/update).
- apiGroups: ["vigil.dev"]
  resources: ["anomalydetectors", "remediationpolicies"]
  verbs: ["get", "list", "watch", "patch", "update"]
# RemediationActions are also created by the operator, and pruned by the history limits.
- apiGroups: ["vigil.dev"]
  resources: ["remediationactions"]
  verbs: ["get", "list", "watch", "patch", "update", "create", "delete"]
- apiGroups: ["vigil.dev"]
  resources: ["anomalydetectors/status", "remediationpolicies/status", "remediationactions/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["vigil.dev"]
  resources: ["anomalydetectors/finalizers", "remediationpolicies/finalizers", "remediationactions/finalizers"]
  verbs: ["update"]
# Events on the custom resources (kopf posts core/v1 events; events.k8s.io for newer clients).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Custom ONNX models (AnomalyDetector spec.model.configMapRef).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
# Notification webhook URLs (RemediationPolicy spec.notify.*.urlSecretRef): get only, never list/watch.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- with .Values.rbac.secretNames }}
  resourceNames:
  {{- range . }}
    - {{ . | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "vigil.subjects" -}}
- kind: ServiceAccount
  name: {{ include "vigil.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}
