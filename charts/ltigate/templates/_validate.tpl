{{/* Checks across values that values.schema.json cannot express. Each failure
     says what is wrong and what to do instead. */}}
{{- define "ltigate.validate" -}}
{{- $v := .Values }}
{{- $cfg := $v.config }}
{{- $kind := include "ltigate.storeKind" . }}
{{- $s := $v.secrets }}

{{- if not (($cfg.server | default dict).public_url) }}
{{- fail "config.server.public_url is required: the base URL the LMS launches, e.g. https://learn.example.com" }}
{{- end }}

{{- /* Modes */}}
{{- $upstream := $cfg.upstream | default dict }}
{{- if eq $v.mode "standalone" }}
{{- range $key := list "url" "api_url" }}
{{- $url := index $upstream $key | default "" }}
{{- if not $url }}
{{- fail (printf "mode standalone: config.upstream.%s is required: the platform's Service, e.g. http://platform.default.svc:3000%s" $key (ternary "/api" "" (eq $key "api_url"))) }}
{{- end }}
{{- if regexMatch "^https?://(localhost|127\\.[0-9.]+|\\[::1\\])([:/]|$)" $url }}
{{- fail (printf "mode standalone: config.upstream.%s (%s) points at the ltigate pod itself; name the platform's Service, or use mode: sidecar" $key $url) }}
{{- end }}
{{- end }}
{{- else }}
{{- if not $v.platform.image.repository }}
{{- fail "mode sidecar: platform.image.repository is required: the platform's container runs in ltigate's pod" }}
{{- end }}
{{- if has (int $v.platform.port) (list (int $v.ports.http) (int $v.ports.admin)) }}
{{- fail (printf "mode sidecar: platform.port %d is one of ltigate's ports (ports.http %d, ports.admin %d); they share the pod's network" (int $v.platform.port) (int $v.ports.http) (int $v.ports.admin)) }}
{{- end }}
{{- end }}
{{- if eq (int $v.ports.http) (int $v.ports.admin) }}
{{- fail "ports.http and ports.admin must differ: the admin listener must stay apart from the public one" }}
{{- end }}

{{- /* Store */}}
{{- if $v.redis.enabled }}
{{- if $cfg.store.url }}
{{- fail "redis.enabled and config.store.url are both set: use the trial Redis or your own Redis, not both" }}
{{- end }}
{{- if include "ltigate.storeUrlFromSecret" . }}
{{- fail "redis.enabled and a Redis URL in the Secret (secrets.storeUrl / secrets.keys.storeUrl) are both set: use the trial Redis or your own Redis, not both" }}
{{- end }}
{{- if $cfg.store.cluster }}
{{- fail "redis.enabled runs a single Redis node: config.store.cluster must stay false" }}
{{- end }}
{{- end }}
{{- if and $cfg.store.url (include "ltigate.storeUrlFromSecret" .) }}
{{- fail "config.store.url and a Redis URL in the Secret (secrets.storeUrl / secrets.keys.storeUrl) are both set: give the URL once" }}
{{- end }}
{{- if eq $kind "embedded" }}
{{- $why := "the embedded store is one database file that one pod opens" }}
{{- if ne (int $v.replicaCount) 1 }}
{{- fail (printf "replicaCount %d needs Redis: %s. Set replicaCount: 1, or set config.store.url (or redis.enabled: true for a trial)" (int $v.replicaCount) $why) }}
{{- end }}
{{- if $v.autoscaling.enabled }}
{{- fail (printf "autoscaling needs Redis: %s. Set config.store.url (or redis.enabled: true for a trial), or autoscaling.enabled: false" $why) }}
{{- end }}
{{- if not $v.persistence.enabled }}
{{- fail "the embedded store needs persistence.enabled: true: without a PersistentVolumeClaim the database, and the grades queued in it, would be lost when the pod is rescheduled" }}
{{- end }}
{{- if and $v.strategy $v.strategy.type (ne $v.strategy.type "Recreate") }}
{{- fail (printf "strategy %s cannot be used with the embedded store: a rolling update starts the new pod while the old one still holds the database. Leave strategy empty (Recreate)" $v.strategy.type) }}
{{- end }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}

{{- /* Secrets */}}
{{- if $s.existingSecret }}
{{- range $name := list "sessionKey" "webhookSecret" "apiToken" "storeUrl" "toolKey" "assertionKey" }}
{{- if index $s $name }}
{{- fail (printf "secrets.%s is set together with secrets.existingSecret: put the value in the existing Secret (key named by secrets.keys.%s) and leave secrets.%s empty" $name $name $name) }}
{{- end }}
{{- end }}
{{- if or $s.previousSessionKeys $s.consumers }}
{{- fail "secrets.previousSessionKeys / secrets.consumers are set together with secrets.existingSecret: put these values in the existing Secret" }}
{{- end }}
{{- if not $s.keys.sessionKey }}
{{- fail "secrets.keys.sessionKey must name the session key in the existing Secret: every replica needs the same key" }}
{{- end }}
{{- else }}
{{- if not $s.sessionKey }}
{{- fail "secrets.sessionKey is required (at least 32 bytes, e.g. the output of `openssl rand -base64 48`), or name an existing Secret in secrets.existingSecret" }}
{{- end }}
{{- $keys := list }}
{{- range $c := ($cfg.consumers | default list) }}
{{- $keys = append $keys (toString $c.key) }}
{{- if not (index ($s.consumers | default dict) (toString $c.key)) }}
{{- fail (printf "consumer %q has no secret: set secrets.consumers.%s (or use secrets.existingSecret)" (toString $c.key) (toString $c.key)) }}
{{- end }}
{{- end }}
{{- range $k, $_ := ($s.consumers | default dict) }}
{{- if not (has $k $keys) }}
{{- fail (printf "secrets.consumers.%s names no consumer in config.consumers" $k) }}
{{- end }}
{{- end }}
{{- end }}
{{- $seen := dict }}
{{- range $c := ($cfg.consumers | default list) }}
{{- $sk := include "ltigate.consumerSecretKey" (list $ (toString $c.key)) }}
{{- if hasKey $seen $sk }}
{{- fail (printf "consumers %q and %q would share the Secret key %q: map them apart in secrets.consumerKeys" (get $seen $sk) (toString $c.key) $sk) }}
{{- end }}
{{- $_ := set $seen $sk (toString $c.key) }}
{{- end }}

{{- /* LTI 1.3 */}}
{{- /* Without secrets.toolKey the chart-created Secret holds a generated
     key (ltigate.toolKey); an existing Secret is not the chart's to fill. */}}
{{- if and $cfg.platforms (ne $kind "embedded") $s.existingSecret (not $s.keys.toolKey) }}
{{- fail "config.platforms with Redis needs the tool key every replica signs with, and the chart generates one only in the Secret it creates: put the key (PEM of an RSA key of at least 2048 bits, e.g. from openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048) in the existing Secret and name its key with secrets.keys.toolKey" }}
{{- end }}

{{- /* Signed identity assertion */}}
{{- $session := $cfg.session | default dict }}
{{- if index $session "assertion" }}
{{- if not (index $session "assertion_audience") }}
{{- fail "config.session.assertion needs config.session.assertion_audience: a value naming this deployment's upstream (e.g. https://platform.internal/acme), the aud the platform checks" }}
{{- end }}
{{- if and (ne $kind "embedded") $s.existingSecret (not $s.keys.assertionKey) }}
{{- fail "config.session.assertion with Redis needs the key every replica signs with, and the chart generates one only in the Secret it creates: put the key (PEM of an EC P-256 key, e.g. from openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256) in the existing Secret and name its key with secrets.keys.assertionKey" }}
{{- end }}
{{- end }}

{{- /* Ingress */}}
{{- if and $v.ingress.enabled (not $v.ingress.hosts) }}
{{- if not (regexMatch "^https?://[^/:]+" $cfg.server.public_url) }}
{{- fail "ingress.hosts is empty and no host can be taken from config.server.public_url: list the hosts" }}
{{- end }}
{{- end }}
{{- end }}
