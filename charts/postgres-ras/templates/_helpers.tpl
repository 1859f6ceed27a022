{{/*
Names. The base name of every object is the release name (so the Services are
<release>-primary and <release>-replicas), truncated to leave room for suffixes.
*/}}
{{- define "postgres-ras.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "postgres-ras.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "postgres-ras.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels; the component label is added by each object. */}}
{{- define "postgres-ras.labels" -}}
helm.sh/chart: {{ include "postgres-ras.chart" . }}
{{ include "postgres-ras.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: postgres-ras
{{- end }}

{{/* Selector labels: only name and instance (+ component); never a version or the role. */}}
{{- define "postgres-ras.selectorLabels" -}}
app.kubernetes.io/name: {{ include "postgres-ras.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Per-component names and selector labels: call with (dict "ctx" $ "component" "database"). */}}
{{- define "postgres-ras.componentLabels" -}}
{{ include "postgres-ras.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "postgres-ras.componentSelectorLabels" -}}
{{ include "postgres-ras.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "postgres-ras.database.fullname" -}}{{ include "postgres-ras.fullname" . }}{{- end }}
{{- define "postgres-ras.headless.fullname" -}}{{ include "postgres-ras.fullname" . }}-headless{{- end }}
{{- define "postgres-ras.primary.fullname" -}}{{ include "postgres-ras.fullname" . }}-primary{{- end }}
{{- define "postgres-ras.replicas.fullname" -}}{{ include "postgres-ras.fullname" . }}-replicas{{- end }}
{{- define "postgres-ras.readable.fullname" -}}{{ include "postgres-ras.fullname" . }}-readable{{- end }}
{{- define "postgres-ras.consul.fullname" -}}{{ include "postgres-ras.fullname" . }}-consul{{- end }}
{{- define "postgres-ras.pgpool.fullname" -}}{{ include "postgres-ras.fullname" . }}-pgpool{{- end }}
{{- define "postgres-ras.demoApp.fullname" -}}{{ include "postgres-ras.fullname" . }}-demo-app{{- end }}
{{- define "postgres-ras.serviceAccountName" -}}{{ include "postgres-ras.fullname" . }}-controller{{- end }}
{{- define "postgres-ras.secretName" -}}{{ .Values.auth.existingSecret | default (include "postgres-ras.fullname" .) }}{{- end }}
{{- define "postgres-ras.clusterName" -}}{{ .Values.clusterName | default (include "postgres-ras.fullname" .) }}{{- end }}

{{/* The pod label the controller writes (primary|replica) and the Services select. */}}
{{- define "postgres-ras.roleLabel" -}}role{{- end }}

{{/* "registry/postgres-ras/<name>:<tag>"; call with (dict "ctx" $ "name" "postgres"). */}}
{{- define "postgres-ras.image" -}}
{{- $tag := .ctx.Values.image.tag | default .ctx.Chart.AppVersion -}}
{{- if .ctx.Values.image.registry -}}
{{ printf "%s/postgres-ras/%s:%s" .ctx.Values.image.registry .name $tag }}
{{- else -}}
{{ printf "postgres-ras/%s:%s" .name $tag }}
{{- end }}
{{- end }}

{{- define "postgres-ras.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Where the controllers reach Consul. */}}
{{- define "postgres-ras.consulURL" -}}
{{- if .Values.consul.enabled -}}
http://{{ include "postgres-ras.consul.fullname" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:8500
{{- else -}}
{{ .Values.consul.externalAddress | trimSuffix "/" }}
{{- end }}
{{- end }}

{{/* A database pod's stable DNS name, from its PGRAS_NAME variable. */}}
{{- define "postgres-ras.podFQDN" -}}
$(PGRAS_NAME).{{ include "postgres-ras.headless.fullname" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
{{- end }}

{{/* Tolerations shared by the database, pgpool and demo app pods. */}}
{{- define "postgres-ras.tolerations" -}}
{{- if not (kindIs "invalid" .Values.tolerationSeconds) -}}
tolerations:
  - key: node.kubernetes.io/not-ready
    operator: Exists
    effect: NoExecute
    tolerationSeconds: {{ .Values.tolerationSeconds | int64 }}
  - key: node.kubernetes.io/unreachable
    operator: Exists
    effect: NoExecute
    tolerationSeconds: {{ .Values.tolerationSeconds | int64 }}
{{- end }}
{{- end }}

{{- define "postgres-ras.nodeSelector" -}}
{{- with .Values.nodeSelector -}}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Hardened container defaults; call with the uid. */}}
{{- define "postgres-ras.containerSecurityContext" -}}
securityContext:
  runAsUser: {{ . }}
  runAsNonRoot: true
  allowPrivilegeEscalation: false
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/*
validateValues: every combination the schema cannot express, each message giving the fix.
*/}}
{{- define "postgres-ras.validateValues" -}}
{{- $msgs := list -}}
{{- $ha := .Values.ha -}}
{{- if ge (float64 $ha.retryTimeout) (float64 $ha.ttl) -}}
{{- $msgs = append $msgs (printf "ha.retryTimeout (%v) must be below ha.ttl (%v): a primary cut off from Consul must demote itself before its lock lapses. Fix: --set ha.retryTimeout=%v" $ha.retryTimeout $ha.ttl (subf $ha.ttl 1)) -}}
{{- end -}}
{{- if ge (float64 $ha.loopWait) (float64 $ha.retryTimeout) -}}
{{- $msgs = append $msgs (printf "ha.loopWait (%v) must be below ha.retryTimeout (%v). Fix: --set ha.loopWait=1" $ha.loopWait $ha.retryTimeout) -}}
{{- end -}}
{{- if ge (float64 $ha.fenceTimeout) (float64 $ha.ttl) -}}
{{- $msgs = append $msgs (printf "ha.fenceTimeout (%v) must be below ha.ttl (%v): the agent must fence before a replica may take over. Fix: --set ha.fenceTimeout=%v" $ha.fenceTimeout $ha.ttl (divf $ha.ttl 2)) -}}
{{- end -}}
{{- if and (not .Values.consul.enabled) (not .Values.consul.externalAddress) -}}
{{- $msgs = append $msgs "consul.enabled is false but consul.externalAddress is empty: the controllers need a Consul. Fix: --set consul.externalAddress=http://consul-server.consul.svc:8500 (or --set consul.enabled=true)" -}}
{{- end -}}
{{- if and .Values.consul.enabled .Values.consul.externalAddress -}}
{{- $msgs = append $msgs (printf "consul.externalAddress (%s) is set but consul.enabled is true: choose one. Fix: --set consul.enabled=false to use the external Consul, or --set consul.externalAddress=\"\"" .Values.consul.externalAddress) -}}
{{- end -}}
{{- if and .Values.consul.enabled .Values.consul.token.existingSecret -}}
{{- $msgs = append $msgs "consul.token.existingSecret is for an external Consul with ACLs; the Consul this chart runs has no ACLs. Fix: --set consul.enabled=false --set consul.externalAddress=... or --set consul.token.existingSecret=\"\"" -}}
{{- end -}}
{{- if and (eq .Values.network.mode "multus") (not .Values.network.multus.networks) -}}
{{- $msgs = append $msgs "network.mode is multus but network.multus.networks is empty. Fix: --set network.multus.networks=<NetworkAttachmentDefinition name, e.g. macvlan-conf>" -}}
{{- end -}}
{{- if and (eq .Values.network.mode "diamanti") (not .Values.network.diamanti.endpoint) -}}
{{- $msgs = append $msgs "network.mode is diamanti but network.diamanti.endpoint is empty. Fix: --set-string network.diamanti.endpoint='{\"network\":\"blue\",\"perfTier\":\"high\"}'" -}}
{{- end -}}
{{- if eq .Values.network.mode "diamanti" -}}
{{- if not (regexMatch "^\\{.*\\}$" .Values.network.diamanti.endpoint) -}}
{{- $msgs = append $msgs (printf "network.diamanti.endpoint (%s) must be a JSON object. Fix: --set-string network.diamanti.endpoint='{\"network\":\"blue\",\"perfTier\":\"high\"}'" .Values.network.diamanti.endpoint) -}}
{{- end -}}
{{- end -}}
{{- $sc := .Values.storage.createStorageClass -}}
{{- if and $sc.enabled (not .Values.storage.storageClass) -}}
{{- $msgs = append $msgs "storage.createStorageClass.enabled needs the class's name. Fix: --set storage.storageClass=<name, e.g. high>" -}}
{{- end -}}
{{- if and $sc.enabled (not $sc.provisioner) -}}
{{- $msgs = append $msgs "storage.createStorageClass.enabled needs a provisioner. Fix: --set storage.createStorageClass.provisioner=<e.g. dcx.csi.diamanti.com>" -}}
{{- end -}}
{{- if and (not (kindIs "invalid" .Values.storage.mirrorCount)) (not $sc.enabled) -}}
{{- $msgs = append $msgs (printf "storage.mirrorCount (%v) only takes effect in a StorageClass the chart creates. Fix: --set storage.createStorageClass.enabled=true --set storage.createStorageClass.provisioner=<provisioner> --set storage.storageClass=<name>, or put mirrorCount in your own StorageClass and drop --set storage.mirrorCount" .Values.storage.mirrorCount) -}}
{{- end -}}
{{- if and .Values.pdb.enabled (ge (int .Values.pdb.maxUnavailable) (int .Values.instances)) (gt (int .Values.instances) 1) -}}
{{- $msgs = append $msgs (printf "pdb.maxUnavailable (%d) lets a drain take every database pod (instances %d). Fix: --set pdb.maxUnavailable=1" (int .Values.pdb.maxUnavailable) (int .Values.instances)) -}}
{{- end -}}
{{- if $msgs -}}
{{- fail (printf "\n\nVALUES ERROR:\n- %s\n" (join "\n- " $msgs)) -}}
{{- end -}}
{{- end }}

{{/* The database ConfigMap's data (also hashed into the pod template's checksum/config). */}}
{{- define "postgres-ras.database.config" -}}
PGRAS_CLUSTER: {{ include "postgres-ras.clusterName" . | quote }}
PGRAS_CONSUL__URL: {{ include "postgres-ras.consulURL" . | quote }}
PGRAS_POSTGRES__LISTEN: "0.0.0.0"
PGRAS_POSTGRES__PORT: "5432"
PGRAS_POSTGRES__ALLOW_NETWORKS: {{ .Values.postgresql.allowNetworks | toJson | quote }}
PGRAS_POSTGRES__PARAMETERS: {{ .Values.postgresql.parameters | default dict | toJson | quote }}
PGRAS_AGENT__FENCE_TIMEOUT: {{ .Values.ha.fenceTimeout | toString | quote }}
PGRAS_HA__TTL: {{ .Values.ha.ttl | toString | quote }}
PGRAS_HA__LOOP_WAIT: {{ .Values.ha.loopWait | toString | quote }}
PGRAS_HA__RETRY_TIMEOUT: {{ .Values.ha.retryTimeout | toString | quote }}
PGRAS_HA__PRIMARY_START_TIMEOUT: {{ .Values.ha.primaryStartTimeout | toString | quote }}
PGRAS_HA__MAXIMUM_LAG_ON_FAILOVER: {{ .Values.ha.maximumLagOnFailover | int64 | toString | quote }}
PGRAS_HA__SYNCHRONOUS_MODE: {{ .Values.ha.synchronousMode | toString | quote }}
PGRAS_HA__SYNCHRONOUS_NODE_COUNT: {{ .Values.ha.synchronousNodeCount | int64 | toString | quote }}
PGRAS_HA__SYNCHRONOUS_MODE_STRICT: {{ .Values.ha.synchronousModeStrict | toString | quote }}
PGRAS_HA__MEMBER_SLOTS_TTL: {{ .Values.ha.memberSlotsTtl | toString | quote }}
PGRAS_CONTROLLER__LISTEN: "0.0.0.0"
PGRAS_CONTROLLER__PORT: "8008"
PGRAS_CONTROLLER__AGENT_URL: "http://127.0.0.1:8010"
PGRAS_CONTROLLER__ALLOW_NETWORKS: {{ .Values.controllerApi.allowNetworks | toJson | quote }}
PGRAS_PUBLISHER__KIND: kubernetes
PGRAS_PUBLISHER__LABEL: {{ include "postgres-ras.roleLabel" . | quote }}
PGRAS_PUBLISHER__POD_SELECTOR: {{ printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s,app.kubernetes.io/component=database" (include "postgres-ras.name" .) .Release.Name | quote }}
PGRAS_PUBLISHER__DELETE_UNREACHABLE_AFTER: {{ .Values.ha.deleteUnreachableAfter | toString | quote }}
{{- end }}

{{/* Per-pod settings of both database containers (downward API); PGRAS_NAME first: the others refer to it. */}}
{{- define "postgres-ras.database.podEnv" -}}
- name: PGRAS_NAME
  valueFrom:
    fieldRef: {fieldPath: metadata.name}
- name: PGRAS_PUBLISHER__POD_NAME
  valueFrom:
    fieldRef: {fieldPath: metadata.name}
- name: PGRAS_PUBLISHER__NAMESPACE
  valueFrom:
    fieldRef: {fieldPath: metadata.namespace}
- name: PGRAS_POSTGRES__HOST
  value: {{ include "postgres-ras.podFQDN" . | quote }}
- name: PGRAS_CONTROLLER__HOST
  value: {{ include "postgres-ras.podFQDN" . | quote }}
- name: PGRAS_AGENT__AUTH_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "postgres-ras.secretName" . }}, key: agent-token}
{{- end }}

{{/* The pgpool ConfigMap's data (hashed into the Deployment's checksum/config). */}}
{{- define "postgres-ras.pgpool.config" -}}
PGPOOL_WRITE_HOST: {{ printf "%s.%s.svc.%s" (include "postgres-ras.primary.fullname" .) .Release.Namespace .Values.clusterDomain | quote }}
PGPOOL_WRITE_PORT: "5432"
{{- /* Every ready member, the primary included: pgpool refuses sessions while its read
       backend is unreachable, and the replicas Service is empty when no replica streams
       (one instance, a rejoin after a failover). */}}
PGPOOL_READ_HOST: {{ printf "%s.%s.svc.%s" (include "postgres-ras.readable.fullname" .) .Release.Namespace .Values.clusterDomain | quote }}
PGPOOL_READ_PORT: "5432"
PGPOOL_PORT: "5432"
PGPOOL_USER: postgres
PGPOOL_NUM_INIT_CHILDREN: {{ .Values.pgpool.numInitChildren | int64 | toString | quote }}
{{- end }}

{{/* libpq settings of a client of pgpool (the demo app, the helm test); the password comes from PGPASSWORD. */}}
{{- define "postgres-ras.pgpoolConninfo" -}}
host={{ include "postgres-ras.pgpool.fullname" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }} port=5432 dbname=postgres user=postgres
{{- end }}

{{/* NetworkPolicy peers: this release's pods, optionally of one component. */}}
{{- define "postgres-ras.releasePeer" -}}
- podSelector:
    matchLabels:
      {{- include "postgres-ras.selectorLabels" .ctx | nindent 6 }}
      {{- with .component }}
      app.kubernetes.io/component: {{ . }}
      {{- end }}
{{- end }}

{{- define "postgres-ras.dnsEgress" -}}
- to:
    - namespaceSelector: {}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end }}
