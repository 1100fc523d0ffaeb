{{/*
The routing sidecar as reusable named templates, for this chart's example tunnel
and for other charts and manifests that add natroute to their own tunnel pods.

  spec:
    {{- $natroute := dict "root" $ "sidecar" .Values.sidecar }}
    containers:
      - name: my-tunnel
        ...
      {{- include "natroute.sidecar.container" $natroute | trim | nindent 6 }}
    volumes:
      {{- include "natroute.sidecar.volumes" $natroute | trim | nindent 6 }}

`sidecar` has the shape of this chart's `sidecar` values. Used from another
chart (with natroute as a dependency), set sidecar.config.registryUrl,
sidecar.config.beacons and sidecar.adminToken.existingSecret: the defaults
point at this chart's own release. The pod should also carry the label
natroute.io/node: "true" (see networkPolicy.registryClients).

The env names are the sidecar's settings (NATROUTE_SIDECAR_<FIELD>), the same
names compose uses.
*/}}

{{/* The sidecar container (one list item). */}}
{{- define "natroute.sidecar.container" -}}
{{- $root := .root }}
{{- $s := .sidecar }}
{{- $config := $s.config | default dict }}
{{- $registryUrl := $config.registryUrl }}
{{- $beacons := $config.beacons }}
{{- if not (and $registryUrl $beacons) }}
{{- if not (and $root.Values.registry $root.Values.beacon) }}
{{- fail "natroute.sidecar.container: set sidecar.config.registryUrl and sidecar.config.beacons" }}
{{- end }}
{{- $registryUrl = $registryUrl | default (include "natroute.registry.url" $root) }}
{{- $beacons = $beacons | default (include "natroute.beacon.addresses" $root) }}
{{- end }}
{{- $secretName := $s.adminToken.existingSecret | default (include "natroute.sidecar.fullname" $root) }}
{{- $port := int ($s.port | default 4000) }}
{{- $adminPort := int ($s.adminPort | default 8080) }}
- name: natroute-sidecar
  image: {{ include "natroute.image" (dict "root" $root "image" $s.image) | quote }}
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
    - name: NATROUTE_SIDECAR_ADMIN_LISTEN
      value: {{ printf "0.0.0.0:%d" $adminPort | quote }}
    - name: NATROUTE_SIDECAR_ADMIN_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ $secretName }}
          key: {{ $s.adminToken.existingSecretKey | default "admin-token" }}
    - name: NATROUTE_SIDECAR_IDENTITY
      value: /var/lib/natroute/identity.json
    - name: NATROUTE_SIDECAR_REGISTRY_URL
      value: {{ $registryUrl | quote }}
    - name: NATROUTE_SIDECAR_BEACONS
      value: {{ $beacons | quote }}
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
  ports:
    - name: natroute-udp
      containerPort: {{ $port }}
      protocol: UDP
    - name: natroute-admin
      containerPort: {{ $adminPort }}
      protocol: TCP
  # The admin API answers once start-up (discovery and the first registration,
  # retried while the registry is unreachable) is done: allow it 5 minutes.
  startupProbe:
    httpGet:
      path: /healthz
      port: natroute-admin
    periodSeconds: 5
    failureThreshold: 60
  livenessProbe:
    httpGet:
      path: /healthz
      port: natroute-admin
    periodSeconds: 20
    timeoutSeconds: 3
    failureThreshold: 3
  readinessProbe:
    httpGet:
      path: /readyz
      port: natroute-admin
    periodSeconds: 10
    timeoutSeconds: 3
    failureThreshold: 3
  {{- with $s.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml ($root.Values.securityContext | default (include "natroute.restrictedSecurityContext" $root | fromYaml)) | nindent 4 }}
  volumeMounts:
    - name: natroute-identity
      mountPath: /var/lib/natroute
    - name: natroute-tmp
      mountPath: /tmp
{{- end }}

{{/*
The sidecar's volumes (list items): its identity directory and /tmp. With
sidecar.identity.claimTemplate the identity volume comes from the StatefulSet's
volumeClaimTemplate named natroute-identity and is not emitted here.
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
{{- end }}

{{/* The restricted container securityContext, for charts without a securityContext value. */}}
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
