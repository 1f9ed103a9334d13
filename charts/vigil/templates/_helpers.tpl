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
# Only what the operator calls (tests/security/test_rbac.py checks both ways against a recorded run).
# AnomalyDetectors and RemediationPolicies: kopf watches them (list/watch); only their status is written.
- apiGroups: ["vigil.dev"]
  resources: ["anomalydetectors", "remediationpolicies"]
  verbs: ["list", "watch"]
# RemediationActions are created by the operator, re-read on a write conflict (get), and pruned by the
# history limits (delete).
- apiGroups: ["vigil.dev"]
  resources: ["remediationactions"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Status is written with merge patches only.
- apiGroups: ["vigil.dev"]
  resources: ["anomalydetectors/status", "remediationpolicies/status", "remediationactions/status"]
  verbs: ["patch"]
# Not a call: a RemediationAction's ownerReference to its policy sets blockOwnerDeletion, which the
# OwnerReferencesPermissionEnforcement admission plugin allows only with update on the owner's finalizers.
- apiGroups: ["vigil.dev"]
  resources: ["remediationpolicies/finalizers"]
  verbs: ["update"]
# core/v1 Events about the custom resources (the operator's and kopf's): created, never patched.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- include "vigil.namedReadRules" . }}
{{- end }}

{{- /* get on Secrets / ConfigMaps by name everywhere the scope rules apply, unless the reads are
       confined to namespaces instead (rbac.secretNamespaces / rbac.configMapNamespaces: see rbac.yaml). */}}
{{- define "vigil.namedReadRules" -}}
{{- if and .Values.rbac.secretNames (not .Values.rbac.secretNamespaces) }}
# Notification webhook URLs (RemediationPolicy spec.notify.*.urlSecretRef): get by name only.
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames:
  {{- range .Values.rbac.secretNames }}
    - {{ . | quote }}
  {{- end }}
  verbs: ["get"]
{{- end }}
{{- if and .Values.rbac.configMapNames (not .Values.rbac.configMapNamespaces) }}
# Custom ONNX models (AnomalyDetector spec.model.configMapRef): get by name only.
- apiGroups: [""]
  resources: ["configmaps"]
  resourceNames:
  {{- range .Values.rbac.configMapNames }}
    - {{ . | quote }}
  {{- end }}
  verbs: ["get"]
{{- end }}
{{- end }}

{{- /* The rules of the Role in one namespace of rbac.secretNamespaces / rbac.configMapNamespaces. */}}
{{- define "vigil.namespaceReadRules" -}}
{{- $rbac := .root.Values.rbac }}
{{- if has .namespace $rbac.secretNamespaces }}
- apiGroups: [""]
  resources: ["secrets"]
  {{- with $rbac.secretNames }}
  resourceNames:
  {{- range . }}
    - {{ . | quote }}
  {{- end }}
  {{- end }}
  verbs: ["get"]
{{- end }}
{{- if has .namespace $rbac.configMapNamespaces }}
- apiGroups: [""]
  resources: ["configmaps"]
  {{- with $rbac.configMapNames }}
  resourceNames:
  {{- range . }}
    - {{ . | quote }}
  {{- end }}
  {{- end }}
  verbs: ["get"]
{{- end }}
{{- end }}

{{- define "vigil.subjects" -}}
- kind: ServiceAccount
  name: {{ include "vigil.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/*
tenancy.roleArns as VIGIL_ALLOWED_ROLE_ARNS: `ns=arn,arn;ns2=arn`, namespaces sorted.
*/}}
{{- define "vigil.roleArns" -}}
{{- $items := list }}
{{- range $ns := keys .Values.tenancy.roleArns | sortAlpha }}
{{- $items = append $items (printf "%s=%s" $ns (join "," (index $.Values.tenancy.roleArns $ns))) }}
{{- end }}
{{- join ";" $items -}}
{{- end }}

{{- /* The ChatOps pods: their own name, so no selector of the operator's matches them. */}}
{{- define "vigil.chatopsSelectorLabels" -}}
app.kubernetes.io/name: {{ include "vigil.name" . }}-chatops
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vigil.chatopsLabels" -}}
helm.sh/chart: {{ include "vigil.chart" . }}
{{ include "vigil.chatopsSelectorLabels" . }}
app.kubernetes.io/component: chatops
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vigil
{{- end }}
