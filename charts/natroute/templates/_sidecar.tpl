{{/*
The routing sidecar as reusable named templates, for this chart's example tunnel
and for other charts and manifests that add natroute to their own tunnel pods.

  spec:
    {{- $natroute := dict "root" $ "sidecar" .Values.natroute.sidecar }}
    containers:
      - name: my-tunnel
        ...
      {{- include "natroute.sidecar.container" $natroute | trim | nindent 6 }}
    volumes:
      {{- include "natroute.sidecar.volumes" $natroute | trim | nindent 6 }}

`sidecar` has the shape of this chart's `sidecar` values. `root` is the
including chart's context: from a parent chart with natroute as a dependency
(any alias), the templates find natroute's own context among the parent's
subcharts, so whoever includes them the sidecar gets natroute's image
(natroute's appVersion, never the parent's), natroute's restricted
securityContext (never the parent's .Values.securityContext), and defaults that
point at the natroute release's registry, beacons and admin-token Secret. The
pod should also carry the label natroute.io/node: "true" (see
networkPolicy.registryClients).

The env names are the sidecar's settings (NATROUTE_SIDECAR_<FIELD>), the same
names compose uses.
*/}}

{{/*
The sidecar container (one list item).
Context: natroute's own when `root` is natroute's or has natroute as a subchart.
*/}}
{{- define "natroute.sidecar.container" -}}
{{- $ctx := .root }}
{{- if not (include "natroute.isOwn" .root) }}
{{- range $name, $sub := (.root.Subcharts | default dict) }}
{{- if include "natroute.isOwn" $sub }}{{ $ctx = $sub }}{{ end }}
{{- end }}
{{- end }}
{{- $own := include "natroute.isOwn" $ctx }}
{{- $s := .sidecar }}
{{- $config := $s.config | default dict }}
{{- $registryUrl := $config.registryUrl }}
{{- if and (not $registryUrl) $own $ctx.Values.registry.enabled }}
{{- $registryUrl = include "natroute.registry.url" $ctx }}
{{- end }}
{{- if not $registryUrl }}
{{- fail "natroute.sidecar.container: set sidecar.config.registryUrl (natroute's registry is not part of this release: registry.enabled is false)" }}
{{- end }}
{{- $beacons := $config.beacons }}
{{- if and (not $beacons) $own $ctx.Values.beacon.enabled }}
{{- $beacons = include "natroute.beacon.addresses" $ctx }}
{{- end }}
{{- $token := $s.adminToken | default dict }}
{{- $secretName := $token.existingSecret | default (include "natroute.sidecar.fullname" $ctx) }}
{{- $port := int ($s.port | default 4000) }}
{{- $adminPort := int ($s.adminPort | default 8080) }}
- name: natroute-sidecar
  image: {{ include "natroute.image" (dict "root" $ctx "image" $s.image) | quote }}
  imagePullPolicy: {{ $s.image.pullPolicy | default "IfNotPresent" }}
  args:
    - natroute-sidecar
  env:
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    - name: NATROUTE_SIDECAR_LISTEN
      value: {{ printf "0.0.0.0:%d" $port | quote }}
    - name: NATROUTE_SIDECAR_HTTP_LISTEN
      value: {{ printf "0.0.0.0:%d" $adminPort | quote }}
    - name: NATROUTE_SIDECAR_ADMIN_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ $secretName }}
          key: {{ $token.existingSecretKey | default "admin-token" }}
    - name: NATROUTE_SIDECAR_IDENTITY
      value: /var/lib/natroute/identity.json
    - name: NATROUTE_SIDECAR_REGISTRY_URL
      value: {{ $registryUrl | quote }}
    {{- if $beacons }}
    - name: NATROUTE_SIDECAR_BEACONS
      value: {{ $beacons | quote }}
    {{- end }}
    {{- if $config.lanAddrs }}
    - name: NATROUTE_SIDECAR_LAN_ADDRS
      value: {{ $config.lanAddrs | quote }}
    {{- else if $s.publishPodIp }}
    - name: NATROUTE_SIDECAR_LAN_ADDRS
      value: {{ printf "$(POD_IP):%d" $port | quote }}
    {{- end }}
    {{- with include "natroute.configEnv" (dict "prefix" "NATROUTE_SIDECAR_" "config" (omit $config "registryUrl" "beacons" "lanAddrs")) | trim }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- with $s.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: natroute-udp
      containerPort: {{ $port }}
      protocol: UDP
    - name: natroute-admin
      containerPort: {{ $adminPort }}
      protocol: TCP
  {{- /* The admin API answers once start-up (discovery and the first
  registration, retried while the registry is unreachable) is done: the
  startup probe allows 5 minutes. */}}
  {{- with include "natroute.probe" (dict "name" "startupProbe" "probe" $s.startupProbe "default" (dict "periodSeconds" 5 "failureThreshold" 60) "path" "/healthz" "port" "natroute-admin") }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with include "natroute.probe" (dict "name" "livenessProbe" "probe" $s.livenessProbe "default" (dict "periodSeconds" 20 "timeoutSeconds" 3 "failureThreshold" 3) "path" "/healthz" "port" "natroute-admin") }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with include "natroute.probe" (dict "name" "readinessProbe" "probe" $s.readinessProbe "default" (dict "periodSeconds" 10 "timeoutSeconds" 3 "failureThreshold" 3) "path" "/readyz" "port" "natroute-admin") }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with $s.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml ($s.securityContext | default (include "natroute.restrictedSecurityContext" $ctx | fromYaml)) | nindent 4 }}
  volumeMounts:
    - name: natroute-identity
      mountPath: /var/lib/natroute
    - name: natroute-tmp
      mountPath: /tmp
    {{- with $s.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
The sidecar's volumes (list items): its identity directory, /tmp and
sidecar.extraVolumes. With sidecar.identity.claimTemplate the identity volume
comes from the StatefulSet's volumeClaimTemplate named natroute-identity and is
not emitted here.
*/}}
{{- define "natroute.sidecar.volumes" -}}
{{- $s := .sidecar }}
{{- if not (and $s.identity $s.identity.claimTemplate) }}
- name: natroute-identity
  {{- if and $s.identity $s.identity.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ $s.identity.existingClaim }}
  {{- else }}
  emptyDir:
    sizeLimit: 16Mi
  {{- end }}
{{- end }}
- name: natroute-tmp
  emptyDir:
    sizeLimit: 16Mi
{{- with $s.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The restricted container securityContext: no root, a read-only root
filesystem, no privilege escalation, every capability dropped, the runtime's
seccomp profile. The sidecar's default whoever includes it.
*/}}
{{- define "natroute.restrictedSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}
