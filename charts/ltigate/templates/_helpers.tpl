{{/* Names ------------------------------------------------------------------ */}}

{{- define "ltigate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name, at most 57 characters so that suffixes such as
     "-admin" and "-redis" still fit the 63 characters of a label value. */}}
{{- define "ltigate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 57 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 57 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 57 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ltigate.redisName" -}}
{{- printf "%s-redis" (include "ltigate.fullname" .) }}
{{- end }}

{{- define "ltigate.adminName" -}}
{{- printf "%s-admin" (include "ltigate.fullname" .) }}
{{- end }}

{{- define "ltigate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ltigate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ltigate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ltigate.secretName" -}}
{{- default (include "ltigate.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Labels ----------------------------------------------------------------- */}}

{{- define "ltigate.commonLabels" -}}
helm.sh/chart: {{ include "ltigate.chart" . }}
app.kubernetes.io/name: {{ include "ltigate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ltigate
{{- end }}

{{/* The gateway's pods. The component label keeps the trial Redis pods out of
     the gateway's selectors. */}}
{{- define "ltigate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ltigate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "ltigate.labels" -}}
{{ include "ltigate.commonLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "ltigate.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "ltigate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "ltigate.redisLabels" -}}
{{ include "ltigate.commonLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{/* Images ----------------------------------------------------------------- */}}

{{- define "ltigate.image" -}}
{{- $img := .Values.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* Store ------------------------------------------------------------------ */}}

{{/* "true" when the Redis URL comes from the Secret (LTIGATE_STORE__URL). */}}
{{- define "ltigate.storeUrlFromSecret" -}}
{{- if .Values.secrets.existingSecret }}
{{- if .Values.secrets.keys.storeUrl }}true{{ end }}
{{- else if .Values.secrets.storeUrl }}true{{ end }}
{{- end }}

{{/* "redis" or "embedded". */}}
{{- define "ltigate.storeKind" -}}
{{- $url := .Values.config.store.url | default "" }}
{{- if or .Values.redis.enabled (include "ltigate.storeUrlFromSecret" .) (not (empty $url)) -}}
redis
{{- else -}}
embedded
{{- end }}
{{- end }}

{{- define "ltigate.dataDir" -}}/var/lib/ltigate{{- end }}
{{- define "ltigate.configDir" -}}/etc/ltigate{{- end }}
{{- define "ltigate.secretDir" -}}/var/run/secrets/ltigate{{- end }}

{{/* Secrets ----------------------------------------------------------------
     ltigate.secretFiles: JSON object, one entry per secret the pods read,
     {"session": {"key": <Secret key>, "value": <chart-created value>}, …};
     consumers are under "consumers" by consumer key. Only secrets that are
     present are listed, so the config references only files that exist.
     The Redis URL is not a file: it is passed as LTIGATE_STORE__URL. */}}
{{- define "ltigate.consumerSecretKey" -}}
{{- $root := index . 0 }}
{{- $key := index . 1 }}
{{- $mapped := index ($root.Values.secrets.consumerKeys | default dict) $key }}
{{- if $mapped }}
{{- $mapped }}
{{- else if and (regexMatch "^[-._a-zA-Z0-9]+$" $key) (le (len $key) 200) }}
{{- printf "consumer-%s" $key }}
{{- else if $root.Values.secrets.existingSecret }}
{{- fail (printf "consumer key %q cannot name a Secret key (allowed: letters, digits, '-', '_', '.'): map it to the key of its secret in secrets.consumerKeys" $key) }}
{{- else }}
{{- printf "consumer-%s" (sha256sum $key | trunc 20) }}
{{- end }}
{{- end }}

{{- define "ltigate.secretFiles" -}}
{{- $s := .Values.secrets }}
{{- $out := dict }}
{{- $existing := not (empty $s.existingSecret) }}
{{- $want := dict "session" (list "sessionKey" "session-key" ($s.sessionKey | default ""))
                  "previousSessions" (list "previousSessionKeys" "previous-session-keys" (join "\n" ($s.previousSessionKeys | default list)))
                  "webhook" (list "webhookSecret" "webhook-secret" ($s.webhookSecret | default ""))
                  "apiToken" (list "apiToken" "api-token" ($s.apiToken | default ""))
                  "toolKey" (list "toolKey" "tool-key" (include "ltigate.toolKey" .))
                  "assertionKey" (list "assertionKey" "assertion-key" (include "ltigate.assertionKey" .)) }}
{{- range $name, $spec := $want }}
{{- if $existing }}
{{- $key := index $s.keys (index $spec 0) }}
{{- if $key }}
{{- $_ := set $out $name (dict "key" $key "value" "") }}
{{- end }}
{{- else if index $spec 2 }}
{{- $_ := set $out $name (dict "key" (index $spec 1) "value" (index $spec 2)) }}
{{- end }}
{{- end }}
{{- $consumers := dict }}
{{- range $c := (.Values.config.consumers | default list) }}
{{- $ckey := toString (default "" $c.key) }}
{{- $value := "" }}
{{- if not $existing }}
{{- $given := index ($s.consumers | default dict) $ckey | default "" }}
{{- if kindIs "slice" $given }}
{{- $value = join "\n" $given }}
{{- else }}
{{- $value = toString $given }}
{{- end }}
{{- end }}
{{- $_ := set $consumers $ckey (dict "key" (include "ltigate.consumerSecretKey" (list $ $ckey)) "value" $value) }}
{{- end }}
{{- $_ := set $out "consumers" $consumers }}
{{- $out | toJson }}
{{- end }}

{{/* The tool key ------------------------------------------------------------
     ltigate.toolKey: the PEM of the LTI 1.3 tool key of the chart-created
     Secret: secrets.toolKey as given; otherwise, when config.platforms is set
     and the chart creates the Secret, the key already in the release's Secret
     (lookup: upgrades keep it), or else a new RSA key (genPrivateKey: PKCS#1
     PEM, 4096 bits). `helm template` and client-side dry runs cannot look
     up, so they make a new key each time. The key is chosen once per render
     and kept in .Values.secrets, so that the Secret and the checksum
     annotation of the pods, rendered apart, hold the same key. */}}
{{- define "ltigate.toolKey" -}}
{{- $s := .Values.secrets }}
{{- if $s.toolKey }}
{{- $s.toolKey }}
{{- else if and (not $s.existingSecret) .Values.config.platforms }}
{{- if not (hasKey $s "ltigateChosenToolKey") }}
{{- $key := include "ltigate.toolKeyInRelease" . }}
{{- if not $key }}
{{- $key = genPrivateKey "rsa" }}
{{- end }}
{{- $_ := set $s "ltigateChosenToolKey" $key }}
{{- end }}
{{- $s.ltigateChosenToolKey }}
{{- end }}
{{- end }}

{{/* ltigate.toolKeyInRelease: the tool key in the Secret this chart created
     for the release, if there is one (empty without a cluster to ask). */}}
{{- define "ltigate.toolKeyInRelease" -}}
{{- include "ltigate.keyInRelease" (list . "tool-key") }}
{{- end }}

{{/* ltigate.keyInRelease (list root secretKey): the value of secretKey in the
     Secret this chart created for the release, if there is one (empty
     without a cluster to ask). */}}
{{- define "ltigate.keyInRelease" -}}
{{- $root := index . 0 }}
{{- $secret := lookup "v1" "Secret" $root.Release.Namespace (include "ltigate.fullname" $root) }}
{{- with ($secret.data | default dict) }}
{{- with (index . (index $ 1)) }}
{{- b64dec . }}
{{- end }}
{{- end }}
{{- end }}

{{/* The assertion key -------------------------------------------------------
     ltigate.assertionKey: the PEM of the signed identity assertion's key of
     the chart-created Secret, chosen as the tool key is: secrets.assertionKey
     as given; otherwise, when config.session.assertion is true and the chart
     creates the Secret, the key already in the release's Secret (lookup:
     upgrades keep it), or else a new EC P-256 key (genPrivateKey "ecdsa":
     SEC1 PEM, BEGIN EC PRIVATE KEY, which ltigate accepts). Chosen once per
     render and kept in .Values.secrets, so that the Secret and the pods'
     checksum annotation hold the same key. */}}
{{- define "ltigate.assertionKey" -}}
{{- $s := .Values.secrets }}
{{- $session := .Values.config.session | default dict }}
{{- if $s.assertionKey }}
{{- $s.assertionKey }}
{{- else if and (not $s.existingSecret) (index $session "assertion") }}
{{- if not (hasKey $s "ltigateChosenAssertionKey") }}
{{- $key := include "ltigate.keyInRelease" (list . "assertion-key") }}
{{- if not $key }}
{{- $key = genPrivateKey "ecdsa" }}
{{- end }}
{{- $_ := set $s "ltigateChosenAssertionKey" $key }}
{{- end }}
{{- $s.ltigateChosenAssertionKey }}
{{- end }}
{{- end }}

{{/* Durations --------------------------------------------------------------
     ltigate.seconds: whole seconds (rounded up) of a duration such as "25s",
     "300ms", "2m", "1h 30m", or a bare number of seconds. */}}
{{- define "ltigate.seconds" -}}
{{- $v := . }}
{{- if or (kindIs "float64" $v) (kindIs "int" $v) (kindIs "int64" $v) }}
{{- int $v }}
{{- else }}
{{- $t := trim (toString $v) }}
{{- if regexMatch "^[0-9]+$" $t }}
{{- $t }}
{{- else }}
{{- $ms := 0 }}
{{- $units := dict "ms" 1 "msec" 1 "s" 1000 "sec" 1000 "secs" 1000 "second" 1000 "seconds" 1000 "m" 60000 "min" 60000 "mins" 60000 "minute" 60000 "minutes" 60000 "h" 3600000 "hr" 3600000 "hrs" 3600000 "hour" 3600000 "hours" 3600000 "d" 86400000 "day" 86400000 "days" 86400000 }}
{{- range $part := regexFindAll "[0-9]+\\s*[a-zA-Z]+" $t -1 }}
{{- $n := regexFind "^[0-9]+" $part | atoi }}
{{- $u := regexFind "[a-zA-Z]+$" $part }}
{{- $f := index $units $u | default 0 }}
{{- $ms = add $ms (mul $n $f) }}
{{- end }}
{{- div (add $ms 999) 1000 }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ltigate.terminationGracePeriodSeconds" -}}
{{- if not (kindIs "invalid" .Values.terminationGracePeriodSeconds) }}
{{- .Values.terminationGracePeriodSeconds | int }}
{{- else }}
{{- $server := .Values.config.server | default dict }}
{{- $outcomes := .Values.config.outcomes | default dict }}
{{- $grace := include "ltigate.seconds" (index $server "shutdown_grace" | default "25s") | int }}
{{- $timeout := include "ltigate.seconds" (index $outcomes "timeout" | default "30s") | int }}
{{- add (int .Values.preStopSleepSeconds) (max $grace $timeout) 10 }}
{{- end }}
{{- end }}

{{/* TOML -------------------------------------------------------------------
     ltigate.tomlKeys: "key = value" lines of a flat table, keys sorted, null
     values left out. Strings, numbers, booleans and lists are written as
     JSON, which is also valid TOML for these types. */}}
{{- define "ltigate.tomlKeys" -}}
{{- range $k := keys . | sortAlpha }}
{{- $v := index $ $k }}
{{- if not (kindIs "invalid" $v) }}
{{ include "ltigate.tomlKey" $k }} = {{ $v | toJson }}
{{- end }}
{{- end }}
{{- end }}

{{/* A TOML key: bare when it can be, quoted otherwise. */}}
{{- define "ltigate.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ . | toJson }}{{ end }}
{{- end }}

{{/* storageClassName: "" leaves the field out (cluster default), "-" sets it
     empty (no dynamic provisioning). */}}
{{- define "ltigate.storageClass" -}}
{{- if eq . "-" }}
storageClassName: ""
{{- else if . }}
storageClassName: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Key of the Redis URL in the Secret. */}}
{{- define "ltigate.storeUrlSecretKey" -}}
{{- if .Values.secrets.existingSecret }}{{ .Values.secrets.keys.storeUrl }}{{ else }}store-url{{ end }}
{{- end }}
