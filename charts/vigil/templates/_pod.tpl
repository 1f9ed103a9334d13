{{/*
The operator pod, shared by the Deployment (one shard) and the StatefulSet (several shards).
*/}}
{{- define "vigil.podTemplate" -}}
{{- $am := .Values.alertmanager }}
{{- if and $am.enabled (not $am.tokenSecretName) (not $am.allowUnauthenticated) }}
{{- fail "alertmanager.enabled needs alertmanager.tokenSecretName (a Secret holding the bearer token Alertmanager sends), or alertmanager.allowUnauthenticated=true to accept alerts from anyone who can reach the port" }}
{{- end }}
{{- if and (not $am.enabled) $am.tokenSecretName }}
{{- fail "alertmanager.tokenSecretName is set but alertmanager.enabled is false: set alertmanager.enabled=true to serve POST /alertmanager" }}
{{- end }}
{{- if and (not $am.enabled) $am.allowUnauthenticated }}
{{- fail "alertmanager.allowUnauthenticated is set but alertmanager.enabled is false: set alertmanager.enabled=true to serve POST /alertmanager" }}
{{- end }}
metadata:
  labels:
    {{- include "vigil.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "vigil.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . | quote }}
    {{- end }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . | quote }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  containers:
    - name: vigil
      image: {{ include "vigil.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - --lease-duration
        - {{ .Values.leaderElection.leaseDurationSeconds | quote }}
        {{- with .Values.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: VIGIL_NAMESPACES
          value: {{ join "," .Values.watchNamespaces | quote }}
        {{- with .Values.prometheus.url }}
        - name: VIGIL_PROMETHEUS_URL
          value: {{ . | quote }}
        {{- end }}
        - name: VIGIL_MAX_MODEL_BYTES
          value: {{ .Values.maxModelBytes | int64 | quote }}
        - name: VIGIL_MAX_SERIES
          value: {{ .Values.maxSeriesPerDetector | int64 | quote }}
        - name: VIGIL_MAX_RESPONSE_BYTES
          value: {{ .Values.prometheus.maxResponseBytes | int64 | quote }}
        - name: VIGIL_PROMETHEUS_COMPRESSION
          value: {{ .Values.prometheus.compression | quote }}
        {{- with .Values.prometheus.allowedUrls }}
        - name: VIGIL_PROMETHEUS_ALLOWED_URLS
          value: {{ join "," . | quote }}
        {{- end }}
        - name: VIGIL_LOG_FORMAT
          value: {{ .Values.logFormat | quote }}
        - name: VIGIL_LOG_LEVEL
          value: {{ .Values.logLevel | quote }}
        - name: VIGIL_HTTP_PORT
          value: {{ .Values.http.port | quote }}
        - name: VIGIL_LEADER_ELECTION
          value: {{ .Values.leaderElection.enabled | quote }}
        - name: VIGIL_LEADER_ELECTION_NAMESPACE
          {{- if .Values.leaderElection.namespace }}
          value: {{ .Values.leaderElection.namespace | quote }}
          {{- else }}
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
          {{- end }}
        - name: VIGIL_LEADER_ELECTION_NAME
          value: {{ .Values.leaderElection.name | quote }}
        {{- if gt (int .Values.sharding.shards) 1 }}
        - name: VIGIL_SHARDS
          value: {{ .Values.sharding.shards | quote }}
        # The StatefulSet ordinal (from POD_NAME) modulo the shard count.
        - name: VIGIL_SHARD_INDEX
          value: auto
        {{- end }}
        {{- with .Values.sharding.selector }}
        - name: VIGIL_SELECTOR
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.aws.region }}
        - name: AWS_REGION
          value: {{ . | quote }}
        - name: AWS_DEFAULT_REGION
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.aws.endpointUrl }}
        - name: VIGIL_AWS_ENDPOINT_URL
          value: {{ . | quote }}
        {{- end }}
        {{- if and .Values.alertmanager.enabled .Values.alertmanager.tokenSecretName }}
        - name: VIGIL_ALERTMANAGER_TOKEN_FILE
          value: /etc/vigil/alertmanager/{{ .Values.alertmanager.tokenSecretKey }}
        {{- else if and .Values.alertmanager.enabled .Values.alertmanager.allowUnauthenticated }}
        - name: VIGIL_ALERTMANAGER_ALLOW_UNAUTHENTICATED
          value: "true"
        {{- end }}
        {{- if .Values.alertmanager.enabled }}
        - name: VIGIL_ALERTMANAGER_MAX_BYTES
          value: {{ .Values.alertmanager.maxBytes | int64 | quote }}
        {{- end }}
        - name: VIGIL_GUARD_TAG
          value: {{ .Values.tenancy.guardTag | quote }}
        - name: VIGIL_NAMESPACE_TAG_KEY
          value: {{ .Values.tenancy.namespaceTagKey | quote }}
        {{- with .Values.tenancy.roleArns }}
        - name: VIGIL_ALLOWED_ROLE_ARNS
          value: {{ include "vigil.roleArns" $ | quote }}
        {{- end }}
        - name: VIGIL_SSM_DOCUMENTS
          value: {{ join "," .Values.tenancy.ssm.documents | quote }}
        {{- with .Values.tenancy.ssm.commandPatterns }}
        - name: VIGIL_SSM_COMMAND_PATTERNS
          value: {{ join "\n" . | toJson }}
        {{- end }}
        - name: VIGIL_SSM_MAX_TIMEOUT
          value: {{ .Values.tenancy.ssm.maxTimeoutSeconds | int64 | quote }}
        - name: VIGIL_COMMAND_POLL_INTERVAL
          value: {{ .Values.tenancy.ssm.commandPollIntervalSeconds | quote }}
        {{- if .Values.provenance.existingSecret }}
        - name: VIGIL_PROVENANCE_KEY_FILE
          value: /etc/vigil/provenance/{{ .Values.provenance.secretKey }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.http.port }}
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        initialDelaySeconds: {{ .Values.livenessProbe.initialDelaySeconds }}
        periodSeconds: {{ .Values.livenessProbe.periodSeconds }}
        timeoutSeconds: {{ .Values.livenessProbe.timeoutSeconds }}
        failureThreshold: {{ .Values.livenessProbe.failureThreshold }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        initialDelaySeconds: {{ .Values.readinessProbe.initialDelaySeconds }}
        periodSeconds: {{ .Values.readinessProbe.periodSeconds }}
        timeoutSeconds: {{ .Values.readinessProbe.timeoutSeconds }}
        failureThreshold: {{ .Values.readinessProbe.failureThreshold }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if .Values.provenance.existingSecret }}
        - name: provenance
          mountPath: /etc/vigil/provenance
          readOnly: true
        {{- end }}
        {{- if and .Values.alertmanager.enabled .Values.alertmanager.tokenSecretName }}
        - name: alertmanager-token
          mountPath: /etc/vigil/alertmanager
          readOnly: true
        {{- end }}
  volumes:
    # The root filesystem is read-only; /tmp is the only writable path.
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.tmpSizeLimit }}
    {{- if .Values.provenance.existingSecret }}
    - name: provenance
      secret:
        secretName: {{ .Values.provenance.existingSecret | quote }}
        defaultMode: 0440
        items:
          - key: {{ .Values.provenance.secretKey | quote }}
            path: {{ .Values.provenance.secretKey | quote }}
    {{- end }}
    {{- if and .Values.alertmanager.enabled .Values.alertmanager.tokenSecretName }}
    - name: alertmanager-token
      secret:
        secretName: {{ .Values.alertmanager.tokenSecretName | quote }}
        defaultMode: 0440
        items:
          - key: {{ .Values.alertmanager.tokenSecretKey | quote }}
            path: {{ .Values.alertmanager.tokenSecretKey | quote }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
