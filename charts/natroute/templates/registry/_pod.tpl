{{/*
The registry: SQLite (a one-replica StatefulSet with its volume) or, when
registry.database names a PostgreSQL URL, a Deployment of registry.replicas
stateless replicas over that shared database.
*/}}

{{/* True (non-empty) when the registry runs on PostgreSQL. */}}
{{- define "natroute.registry.postgres" -}}
{{- with .Values.registry.database }}{{ if or .url .existingSecret }}true{{ end }}{{ end }}
{{- end }}

{{/* Secret holding the database URL. */}}
{{- define "natroute.registry.databaseSecretName" -}}
{{- default (printf "%s-database" (include "natroute.registry.fullname" .)) .Values.registry.database.existingSecret }}
{{- end }}

{{/* The pod template of either workload. */}}
{{- define "natroute.registry.podTemplate" -}}
{{- $labels := dict "root" . "component" "registry" }}
{{- $postgres := include "natroute.registry.postgres" . }}
metadata:
  labels:
    {{- include "natroute.componentLabels" $labels | nindent 4 }}
    {{- with .Values.registry.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- $annotations := merge (include "natroute.scrapeAnnotations" (dict "root" . "port" 9000) | fromYaml) .Values.registry.podAnnotations }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "natroute.serviceAccountName" . }}
  automountServiceAccountToken: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: 30
  containers:
    - name: registry
      image: {{ include "natroute.image" (dict "root" . "image" .Values.registry.image) | quote }}
      imagePullPolicy: {{ .Values.registry.image.pullPolicy }}
      # The command alone: every setting comes from the env below.
      args:
        - natroute-registry
      env:
        - name: NATROUTE_REGISTRY_HTTP_LISTEN
          value: "0.0.0.0:9000"
        {{- if $postgres }}
        - name: NATROUTE_REGISTRY_DATABASE_URL
          valueFrom:
            secretKeyRef:
              name: {{ include "natroute.registry.databaseSecretName" . }}
              key: {{ .Values.registry.database.existingSecretKey }}
        {{- else }}
        - name: NATROUTE_REGISTRY_DB
          value: /var/lib/natroute/registry.db
        {{- end }}
        - name: NATROUTE_REGISTRY_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ include "natroute.registry.secretName" . }}
              key: {{ .Values.registry.token.existingSecretKey }}
        {{- with include "natroute.configEnv" (dict "prefix" "NATROUTE_REGISTRY_" "config" .Values.registry.config) | trim }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with .Values.registry.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http
          containerPort: 9000
          protocol: TCP
      {{- range $name, $path := dict "startupProbe" "/healthz" "livenessProbe" "/healthz" "readinessProbe" "/readyz" }}
      {{- with include "natroute.probe" (dict "name" $name "probe" (get $.Values.registry $name) "path" $path "port" "http") }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- end }}
      {{- with .Values.registry.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- if not $postgres }}
        - name: data
          mountPath: /var/lib/natroute
        {{- end }}
        {{- include "natroute.tmpMount" . | nindent 8 }}
        {{- with .Values.registry.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    {{- include "natroute.tmpVolume" . | nindent 4 }}
    {{- if and (not $postgres) (not .Values.registry.persistence.enabled) }}
    - name: data
      emptyDir: {}
    {{- end }}
    {{- with .Values.registry.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.registry.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.registry.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.registry.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
