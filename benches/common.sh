# shellcheck shell=bash
# What the bench scripts share: the nginx they measure and ltigate's bench
# configuration, each written once.

# The benchmark's deployment: the public URL the launches are signed for,
# and the one consumer.
PUBLIC_URL=https://learn.bench.test
KEY=bench-key
SECRET=bench-secret

# free_port: a free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# setup NAME BINARY…: checks that the release examples and the given
# ltigate binaries exist, then makes the scratch directory $T and a
# trap that stops every process in $PIDS and removes $T on exit.
setup() {
  local name=$1 b
  shift
  (($# >= 1)) || { echo "usage: benches/$name LTIGATE_BINARY..." >&2; exit 2; }
  REL=${CARGO_TARGET_DIR:-$PWD/target}/release
  for b in "$REL/examples/bench_upstream" "$REL/examples/launch_load" "$@"; do
    [[ -x $b ]] || { echo "$name: $b is missing (cargo build --release --bin ltigate && cargo build --release --examples)" >&2; exit 2; }
  done
  T=$(mktemp -d "/tmp/ltigate-${name%.sh}.XXXXXX")
  PIDS=()
  trap cleanup EXIT
}

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  rm -rf "$T"
}

# ltigate_conf LISTEN_PORT ADMIN_PORT UPSTREAM_PORT STORE_LINE [EXTRA] prints
# ltigate's configuration (STORE_LINE: the [store] section's one line, e.g.
# path = "/tmp/x/ltigate.db"; EXTRA: more TOML, appended).
ltigate_conf() {
  cat <<EOF
[server]
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
public_url = "$PUBLIC_URL"

[upstream]
url = "http://127.0.0.1:$3"
api_url = "http://127.0.0.1:$3/api"
api_token = "bench-upstream-token"

[session]
secret = "bench-session-secret-0123456789abcdef"

[store]
$4

[[consumers]]
name = "Bench"
key = "$KEY"
secret = "$SECRET"
lms_id = "bench"
${5:-}
EOF
}

# The nginx load.sh and compare.sh measure, configured once: a plain
# reverse proxy ("nginx") and the same proxy also sending the upstream the
# headers ltigate sends ("nginx-h").
#
# nginx_conf DIR WORKERS UPSTREAM_PORT NGINX_PORT NGINX_H_PORT prints the
# configuration (nginx -p DIR -c FILE; DIR/logs must exist).
nginx_conf() {
  local dir=$1 workers=$2 up=$3 plain=$4 with_headers=$5
  cat <<EOF
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events {
    worker_connections 8192;
}
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    upstream platform {
        server 127.0.0.1:$up;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$plain;
        location / {
            proxy_pass http://platform;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    # The same proxy sending the upstream what ltigate sends it for the
    # benchmark's session: the forwarding headers and the identity headers
    # (constants here; ltigate takes them from the cookie). Not a plain
    # proxy: a like-for-like line, since parsing these headers costs the
    # upstream, which shares the server CPU.
    server {
        listen 127.0.0.1:$with_headers;
        location / {
            proxy_pass http://platform;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-Host learn.bench.test;
            proxy_set_header X-Request-Id \$request_id;
            proxy_set_header X-LTI-User bench:learner-0;
            proxy_set_header X-LTI-Upstream-User up-bench%253Alearner-0;
            proxy_set_header X-LTI-Email zoe@example.org;
            proxy_set_header X-LTI-Given-Name Zo%C3%AB;
            proxy_set_header X-LTI-Family-Name van%20Dijk;
            proxy_set_header X-LTI-Consumer Bench;
            proxy_set_header X-LTI-Course-Roles C-1=Learner;
            proxy_set_header X-LTI-Course C-1;
            proxy_set_header X-LTI-Roles Learner;
        }
    }
}
EOF
}
