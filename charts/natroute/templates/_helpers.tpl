{{/*
Names, labels, images and shared pod pieces (the conventions of `helm create`).
*/}}

{{/* Chart name (nameOverride wins), at most 63 characters. */}}
{{- define "natroute.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified prefix of every resource name. Truncated to 40 characters so
"<fullname>-beacon-headless" and pod names stay within DNS label limits.
*/}}
{{- define "natroute.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version for the helm.sh/chart label. */}}
{{- define "natroute.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels. */}}
{{- define "natroute.labels" -}}
helm.sh/chart: {{ include "natroute.chart" . }}
{{ include "natroute.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: natroute
{{- end }}

{{/* Selector labels. */}}
{{- define "natroute.selectorLabels" -}}
app.kubernetes.io/name: {{ include "natroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: (dict "root" $ "component" "beacon"). */}}
{{- define "natroute.componentLabels" -}}
{{ include "natroute.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "beacon"). */}}
{{- define "natroute.componentSelectorLabels" -}}
{{ include "natroute.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "natroute.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "natroute.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
True (non-empty) when a context is natroute's own chart, under any alias: its
Chart.yaml carries the annotation natroute.io/chart.
*/}}
{{- define "natroute.isOwn" -}}
{{- if index (.Chart.Annotations | default dict) "natroute.io/chart" }}true{{ end }}
{{- end }}

{{/*
natroute's own appVersion, whichever chart's context is given: this chart's
when the context is natroute's (its Chart.yaml, so `helm package
--app-version` is honoured), else the one written below, which a test keeps
equal to Chart.yaml. A parent chart's appVersion is never natroute's.
*/}}
{{- define "natroute.appVersion" -}}
{{- if include "natroute.isOwn" . }}{{ .Chart.AppVersion }}{{ else }}0.1.0{{ end }}
{{- end }}

{{/* Image reference: (dict "root" $ "image" .Values.beacon.image); tag defaults to natroute's appVersion. */}}
{{- define "natroute.image" -}}
{{- $tag := .image.tag | default (include "natroute.appVersion" .root) | toString }}
{{- if .image.registry }}
{{- printf "%s/%s:%s" .image.registry .image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* Names of the component resources. */}}
{{- define "natroute.registry.fullname" -}}
{{- printf "%s-registry" (include "natroute.fullname" .) }}
{{- end }}

{{- define "natroute.beacon.fullname" -}}
{{- printf "%s-beacon" (include "natroute.fullname" .) }}
{{- end }}

{{- define "natroute.beacon.headless" -}}
{{- printf "%s-beacon-headless" (include "natroute.fullname" .) }}
{{- end }}

{{- define "natroute.sidecar.fullname" -}}
{{- printf "%s-sidecar" (include "natroute.fullname" .) }}
{{- end }}

{{- define "natroute.tunnel.fullname" -}}
{{- printf "%s-tunnel" (include "natroute.fullname" .) }}
{{- end }}

{{/* Secret holding the registry operator token. */}}
{{- define "natroute.registry.secretName" -}}
{{- default (include "natroute.registry.fullname" .) .Values.registry.token.existingSecret }}
{{- end }}

{{/* Secret holding the sidecar admin token. */}}
{{- define "natroute.sidecar.secretName" -}}
{{- default (include "natroute.sidecar.fullname" .) .Values.sidecar.adminToken.existingSecret }}
{{- end }}

{{/* In-cluster base URL of the registry. */}}
{{- define "natroute.registry.url" -}}
{{- printf "http://%s.%s.svc.%s:%d" (include "natroute.registry.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.registry.service.port) }}
{{- end }}

{{/* Pod DNS name of beacon replica .index: (dict "root" $ "index" 0). */}}
{{- define "natroute.beacon.podHost" -}}
{{- $root := .root }}
{{- printf "%s-%d.%s.%s.svc.%s" (include "natroute.beacon.fullname" $root) (int .index) (include "natroute.beacon.headless" $root) $root.Release.Namespace $root.Values.clusterDomain }}
{{- end }}

{{/* host:port of every beacon replica's pod DNS name, comma-separated (gossip peers). */}}
{{- define "natroute.beacon.peers" -}}
{{- $peers := list }}
{{- range $i := until (int .Values.beacon.replicas) }}
{{- $peers = append $peers (printf "%s:9001" (include "natroute.beacon.podHost" (dict "root" $ "index" $i))) }}
{{- end }}
{{- join "," $peers }}
{{- end }}

{{/* The addresses the beacons advertise (and sidecars bootstrap from), comma-separated. */}}
{{- define "natroute.beacon.addresses" -}}
{{- if .Values.beacon.advertise }}
{{- join "," .Values.beacon.advertise }}
{{- else }}
{{- include "natroute.beacon.peers" . }}
{{- end }}
{{- end }}

{{/*
The stream relay URL each beacon replica registers, as a JSON list (index =
ordinal), or [] to let each beacon derive its own (ws://<advertised host>:8001,
right for the pod DNS names): beacon.advertiseStream as given; else, with
beacon.advertise, ws(s)://<advertised host>:<the Service's HTTP port>/v1/relay,
the port being the replica's beacon.service.httpNodePorts entry for NodePort.
*/}}
{{- define "natroute.beacon.streamUrls" -}}
{{- $b := .Values.beacon }}
{{- $urls := list }}
{{- $replicas := int $b.replicas }}
{{- if $b.advertiseStream }}
{{- if ne (len $b.advertiseStream) $replicas }}
{{- fail (printf "beacon.advertiseStream has %d entries for %d replicas: give one URL per replica" (len $b.advertiseStream) $replicas) }}
{{- end }}
{{- $urls = $b.advertiseStream }}
{{- else if and $b.advertise $b.service.httpPort (ne (toString $b.config.stream) "false") }}
{{- $svc := $b.service }}
{{- $nodePort := eq $svc.type "NodePort" }}
{{- if and $nodePort (ne (len $svc.httpNodePorts) $replicas) }}
{{- fail "beacon.advertise with a NodePort Service: set beacon.service.httpNodePorts (one per replica) or beacon.advertiseStream, so nodes get a stream relay URL they can reach" }}
{{- end }}
{{- $scheme := ternary "wss" "ws" (not (empty $b.config.tlsCert)) }}
{{- range $i, $addr := $b.advertise }}
{{- $port := $svc.httpPort }}
{{- if $nodePort }}{{ $port = index $svc.httpNodePorts $i }}{{ end }}
{{- $urls = append $urls (printf "%s://%s:%d/v1/relay" $scheme (regexReplaceAll ":[0-9]+$" $addr "") (int $port)) }}
{{- end }}
{{- end }}
{{- toJson $urls }}
{{- end }}

{{/*
Env entries of a component's `config` map: (dict "prefix" "NATROUTE_BEACON_" "config" .Values.beacon.config).
A key fooBar becomes <prefix>FOO_BAR; null values are left out so the service
default applies. Numbers go through toJson so 2592000 never renders as 2.592e+06.
*/}}
{{- define "natroute.configEnv" -}}
{{- $prefix := .prefix }}
{{- range $key, $value := .config }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ printf "%s%s" $prefix (snakecase $key | upper) }}
  value: {{ ternary $value (toJson $value) (kindIs "string" $value) | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A container probe, the whole `<name>:` block, or nothing when the probe's
`enabled` is false: (dict "name" "livenessProbe" "probe" .Values.beacon.livenessProbe
"default" (dict "periodSeconds" 20) "path" "/healthz" "port" "http" "scheme" "HTTPS").
The probe's values (timings) override `default`; httpGet is the chart's.
*/}}
{{- define "natroute.probe" -}}
{{- $probe := mergeOverwrite (deepCopy (.default | default dict)) (.probe | default dict) }}
{{- if ne (toString $probe.enabled) "false" }}
{{ .name }}:
  httpGet:
    path: {{ .path }}
    port: {{ .port }}
    {{- if eq (.scheme | default "HTTP") "HTTPS" }}
    scheme: HTTPS
    {{- end }}
  {{- with omit $probe "enabled" }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}

{{/* Prometheus scrape annotations: (dict "root" $ "port" 8001). */}}
{{- define "natroute.scrapeAnnotations" -}}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* Writable /tmp for containers with a read-only root filesystem. */}}
{{- define "natroute.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{- define "natroute.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
Value of a token Secret key: the given value, else the one already stored in the
cluster (lookup; empty during `helm template`), else a new random one. Keeps
generated tokens stable across upgrades.
(dict "root" $ "name" "secret-name" "key" "token" "value" .Values.x.value)
*/}}
{{- define "natroute.secretToken" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- if .value }}
{{- .value | b64enc }}
{{- else if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key }}
{{- else }}
{{- randAlphaNum 40 | b64enc }}
{{- end }}
{{- end }}
