#!/usr/bin/env bash
# Side-by-side CPU comparison of ltigate builds against nginx, for measuring
# one change at a time (benches/README.md, "Where the time goes"):
#
#   cp target/release/ltigate /tmp/ltigate-before    # build, change, build again
#   benches/compare.sh /tmp/ltigate-before target/release/ltigate
#
# Starts the stub upstream, nginx (the configuration load.sh uses) and each
# given ltigate binary, all on the server CPU; then runs wrk (CPU 0) against
# nginx and each binary in turn, REPS rounds, and prints per run: requests/s
# and the CPU microseconds per request of the proxy and of the upstream
# behind it, with their user and system parts (from /proc). Environment:
# CONNECTIONS [64], SECONDS_PER_RUN [4], REPS [3]. Needs nginx, wrk, curl,
# python3 and the release examples
# (cargo build --release --examples). Loopback only; stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
C=${CONNECTIONS:-64}
D=${SECONDS_PER_RUN:-4}
R=${REPS:-3}
(($# >= 1)) || { echo "usage: benches/compare.sh LTIGATE_BINARY..." >&2; exit 2; }
REL=$PWD/target/release
for b in "$REL/examples/bench_upstream" "$REL/examples/launch_load" "$@"; do
  [[ -x $b ]] || { echo "compare.sh: $b is missing (cargo build --release --examples --bin ltigate)" >&2; exit 2; }
done
if (($(nproc) >= 2)); then LOAD=(taskset -c 0); SERVER=(taskset -c 1); else LOAD=(); SERVER=(); fi
T=$(mktemp -d /tmp/ltigate-compare.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  rm -rf "$T"
}
trap cleanup EXIT
fp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { # pids… → "user system" ticks, summed
  local u=0 s=0 p f
  for p in "$@"; do
    f=$(sed 's/.*) //' "/proc/$p/stat")
    read -r -a a <<<"$f"
    u=$((u + a[11]))
    s=$((s + a[12]))
  done
  echo "$u $s"
}
UP=$(fp)
NG=$(fp)
"${SERVER[@]}" "$REL/examples/bench_upstream" "127.0.0.1:$UP" >/dev/null 2>&1 &
UPID=$!
PIDS+=("$UPID")
mkdir -p "$T/nginx/logs"
cat >"$T/nginx.conf" <<N
worker_processes 1;
pid $T/nginx/nginx.pid;
error_log $T/nginx/logs/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $T/nginx/cb; proxy_temp_path $T/nginx/p; fastcgi_temp_path $T/nginx/f;
    uwsgi_temp_path $T/nginx/u; scgi_temp_path $T/nginx/s;
    upstream platform { server 127.0.0.1:$UP; keepalive 128; }
    server {
        listen 127.0.0.1:$NG;
        location / { proxy_pass http://platform; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
N
"${SERVER[@]}" nginx -p "$T/nginx" -c "$T/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 &
NPID=$!
PIDS+=("$NPID")
declare -A PORT PID NAME
PORT[nginx]=$NG
NAME[nginx]=nginx
i=0
for b in "$@"; do
  i=$((i + 1))
  g=$(fp)
  a=$(fp)
  mkdir -p "$T/g$i"
  cat >"$T/g$i.toml" <<G
[server]
listen = "127.0.0.1:$g"
admin_listen = "127.0.0.1:$a"
public_url = "https://learn.bench.test"
[upstream]
url = "http://127.0.0.1:$UP"
api_url = "http://127.0.0.1:$UP/api"
api_token = "bench-upstream-token"
[session]
secret = "bench-session-secret-0123456789abcdef"
[store]
path = "$T/g$i/ltigate.db"
[[consumers]]
name = "Bench"
key = "bench-key"
secret = "bench-secret"
lms_id = "bench"
G
  "${SERVER[@]}" "$b" -c "$T/g$i.toml" serve >"$T/g$i.log" 2>&1 &
  PID[b$i]=$!
  PIDS+=("${PID[b$i]}")
  PORT[b$i]=$g
  NAME[b$i]=$b
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$a/readyz" && break; sleep 0.1; done
done
sleep 0.5
COOKIE=$("$REL/examples/launch_load" cookie "127.0.0.1:${PORT[b1]}" https://learn.bench.test bench-key bench-secret)
PID[nginx]="$NPID $(pgrep -P "$NPID" | tr '\n' ' ')"
targets="nginx"
for j in $(seq "$i"); do targets="$targets b$j"; done
run() { "${LOAD[@]}" wrk -t1 -c"$C" -d"$1"s -H "Cookie: $COOKIE" "http://127.0.0.1:${PORT[$2]}/courses/C-1/page"; }
for t in $targets; do run 1 "$t" >/dev/null; done
echo "$C connections, ${D} s per run, $R rounds; CPU from /proc (10 ms ticks)"
for r in $(seq "$R"); do
  for t in $targets; do
    # shellcheck disable=SC2086
    read -r pu0 ps0 <<<"$(ticks ${PID[$t]})"
    read -r uu0 us0 <<<"$(ticks "$UPID")"
    out=$(run "$D" "$t")
    # shellcheck disable=SC2086
    read -r pu1 ps1 <<<"$(ticks ${PID[$t]})"
    read -r uu1 us1 <<<"$(ticks "$UPID")"
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    bad=$(grep -c "Non-2xx\|Socket errors" <<<"$out" || true)
    python3 -c "
n = $n
k = 1e4 / n  # 10 ms ticks -> microseconds per request
pu, ps, uu, us = ($pu1 - $pu0) * k, ($ps1 - $ps0) * k, ($uu1 - $uu0) * k, ($us1 - $us0) * k
print(f'round $r  {\"${NAME[$t]}\":<40} {n/$D:9.0f} req/s  proxy {pu+ps:5.1f} us/req (user {pu:4.1f} sys {ps:4.1f})  upstream {uu+us:5.1f} us/req (user {uu:4.1f} sys {us:4.1f})  errors={$bad}')"
  done
done
