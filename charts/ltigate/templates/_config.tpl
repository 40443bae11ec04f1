{{/* ltigate.toml from .Values.config plus what the chart decides: the
     listeners (from .Values.ports), the upstream in sidecar mode, the store
     (embedded file on the volume, or Redis) and every secret (the tool key
     included) as a *_file path under the mounted Secret. */}}
{{- define "ltigate.config" -}}
{{- $cfg := .Values.config }}
{{- $files := include "ltigate.secretFiles" . | fromJson }}
{{- $dir := include "ltigate.secretDir" . }}
{{- $kind := include "ltigate.storeKind" . -}}
# ltigate.toml rendered by the ltigate chart for release {{ .Release.Name }}.
# Secrets are files under {{ $dir }}; edit the chart values, not this file.
{{- $server := deepCopy ($cfg.server | default dict) }}
{{- $_ := set $server "listen" (printf "0.0.0.0:%d" (int .Values.ports.http)) }}
{{- $_ := set $server "admin_listen" (printf "0.0.0.0:%d" (int .Values.ports.admin)) }}

[server]
{{- include "ltigate.tomlKeys" $server }}
{{- $upstream := deepCopy ($cfg.upstream | default dict) }}
{{- if eq .Values.mode "sidecar" }}
{{- $local := printf "http://127.0.0.1:%d" (int .Values.platform.port) }}
{{- if not (index $upstream "url") }}
{{- $_ := set $upstream "url" $local }}
{{- end }}
{{- if not (index $upstream "api_url") }}
{{- $_ := set $upstream "api_url" (printf "%s/api" $local) }}
{{- end }}
{{- end }}
{{- with $files.apiToken }}
{{- $_ := set $upstream "api_token_file" (printf "%s/%s" $dir .key) }}
{{- end }}

[upstream]
{{- include "ltigate.tomlKeys" $upstream }}
{{- with $cfg.launch }}

[launch]
{{- include "ltigate.tomlKeys" . }}
{{- end }}
{{- $session := deepCopy ($cfg.session | default dict) }}
{{- with $files.session }}
{{- $_ := set $session "secret_file" (printf "%s/%s" $dir .key) }}
{{- end }}
{{- with $files.previousSessions }}
{{- $_ := set $session "previous_secrets_file" (printf "%s/%s" $dir .key) }}
{{- end }}
{{- with $files.assertionKey }}
{{- $_ := set $session "assertion_key_file" (printf "%s/%s" $dir .key) }}
{{- end }}

[session]
{{- include "ltigate.tomlKeys" $session }}
{{- $store := dict }}
{{- if eq $kind "embedded" }}
{{- $_ := set $store "path" (printf "%s/ltigate.db" (include "ltigate.dataDir" .)) }}
{{- else if .Values.redis.enabled }}
{{- $_ := set $store "url" (printf "redis://%s:%d" (include "ltigate.redisName" .) (int .Values.redis.port)) }}
{{- else }}
{{- if not (include "ltigate.storeUrlFromSecret" .) }}
{{- $_ := set $store "url" $cfg.store.url }}
{{- end }}
{{- $_ := set $store "cluster" ($cfg.store.cluster | default false) }}
{{- end }}
{{- with ($cfg.store | default dict).timeout }}
{{- $_ := set $store "timeout" . }}
{{- end }}

[store]
{{- include "ltigate.tomlKeys" $store }}
{{- $webhook := deepCopy ($cfg.webhook | default dict) }}
{{- with $files.webhook }}
{{- $_ := set $webhook "secret_file" (printf "%s/%s" $dir .key) }}
{{- end }}

[webhook]
{{- include "ltigate.tomlKeys" $webhook }}
{{- range $section := list "outcomes" "licences" "cartridge" }}
{{- with index $cfg $section }}

[{{ $section }}]
{{- include "ltigate.tomlKeys" . }}
{{- end }}
{{- end }}
{{- $lti13 := deepCopy ($cfg.lti13 | default dict) }}
{{- with $files.toolKey }}
{{- $_ := set $lti13 "key_file" (printf "%s/%s" $dir .key) }}
{{- end }}
{{- if $lti13 }}

[lti13]
{{- include "ltigate.tomlKeys" $lti13 }}
{{- end }}
{{- range $c := ($cfg.consumers | default list) }}
{{- $consumer := deepCopy $c }}
{{- $secret := index $files.consumers (toString $c.key) }}
{{- $_ := set $consumer "secret_file" (printf "%s/%s" $dir $secret.key) }}

[[consumers]]
{{- include "ltigate.tomlKeys" $consumer }}
{{- end }}
{{- range $p := ($cfg.platforms | default list) }}

[[platforms]]
{{- include "ltigate.tomlKeys" $p }}
{{- end }}
{{- range $id := keys ($cfg.courses | default dict) | sortAlpha }}

[courses.{{ include "ltigate.tomlKey" $id }}]
{{- include "ltigate.tomlKeys" (index $cfg.courses $id | default dict) }}
{{- end }}
{{ end }}
