#!/usr/bin/env bash
# Load comparison on loopback, in one run on one machine (benches/README.md):
#
# 1. proxied requests with a session: the upstream reached directly, nginx as
#    a plain keep-alive reverse proxy, the same nginx sending the upstream the
#    headers ltigate sends ("nginx-h"), and ltigate, driven by wrk at the same
#    concurrencies, REPS alternating runs each (direct, nginx, nginx-h,
#    ltigate, …);
# 2. memory: ltigate idle and under MEMORY_CONNECTIONS keep-alive connections
#    (nginx beside it for reference);
# 3. launches per second with the embedded store and with Redis, LTI 1.1
#    (fresh nonce each) and LTI 1.3 (a login each, the id_tokens signed
#    before the timed part, the platform's JWKS cached) alternating, upstream
#    API stub; and LTI 1.3 logins per second.
#
# Prints Markdown: machine facts, what was pinned, the nginx and ltigate
# configurations, the tables and the targets met or missed. Everything it
# starts runs on 127.0.0.1 and is stopped on exit; the measurements end
# after MAX_SECONDS at the latest.
#
# Environment knobs (defaults in brackets): DURATION [5] seconds per point,
# REPS [3], CONCURRENCY ["1 16 64 256"], LAUNCH_CONCURRENCY ["16 64"],
# LAUNCH_SECONDS [5], LEARNERS [1000], LTI13_RATE_BOUND [10000] (LTI 1.3
# launches prepared per second of a run), MEMORY_CONNECTIONS [1000],
# BUILD [1] (0: use the binaries already built), MAX_SECONDS [1500],
# RAW_DIR [none] (keep the raw results there). The binaries are taken from
# $CARGO_TARGET_DIR/release when it is set, else target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=benches/common.sh
source benches/common.sh

DURATION=${DURATION:-5}
REPS=${REPS:-3}
CONCURRENCY=${CONCURRENCY:-"1 16 64 256"}
LAUNCH_CONCURRENCY=${LAUNCH_CONCURRENCY:-"16 64"}
LAUNCH_SECONDS=${LAUNCH_SECONDS:-5}
LEARNERS=${LEARNERS:-1000}
# Each LTI 1.3 run prepares LTI13_RATE_BOUND × LAUNCH_SECONDS launches (a
# login and a signed id_token each, ~1 ms of RSA signing per token on the
# load generator) before its timed part: set it above any rate expected
# (the fastest LTI 1.1 launches measured here: ~8,200/s). A run that uses
# them all up ends early and says so (examples/launch_load/lti13.rs).
LTI13_RATE_BOUND=${LTI13_RATE_BOUND:-10000}
MEMORY_CONNECTIONS=${MEMORY_CONNECTIONS:-1000}
BUILD=${BUILD:-1}
MAX_SECONDS=${MAX_SECONDS:-1500}
RAW_DIR=${RAW_DIR:-}

for tool in nginx wrk redis-server redis-cli taskset python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "load.sh: $tool is missing (apt-get install -y nginx wrk redis-server util-linux curl)" >&2
    exit 2
  }
done

if [[ -z ${LOAD_SH_BOUNDED:-} ]]; then
  if [[ $BUILD == 1 ]]; then
    # The binary on its own: built together with the examples it would get
    # the dev-dependencies' features (tokio's test-util clock) too.
    echo "== cargo build --release --bin ltigate && cargo build --release --examples" >&2
    cargo build --release --bin ltigate >&2
    cargo build --release --examples >&2
  fi
  # The measurements stop by themselves: TERM after MAX_SECONDS runs the
  # cleanup below, KILL 30 s later if that hangs.
  LOAD_SH_BOUNDED=1 exec timeout -s TERM -k 30 "$MAX_SECONDS" "$0" "$@"
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
for b in "$BIN/ltigate" "$BIN/examples/bench_upstream" "$BIN/examples/launch_load"; do
  [[ -x $b ]] || { echo "load.sh: $b is missing (cargo build --release --bin ltigate && cargo build --release --examples)" >&2; exit 2; }
done

TMP=$(mktemp -d /tmp/ltigate-load.XXXXXX)
PIDS=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 30); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [[ -n $RAW_DIR ]]; then mkdir -p "$RAW_DIR" && cp "$TMP"/*.tsv "$TMP"/*.txt "$TMP"/*.log "$TMP"/*.conf "$TMP"/*.toml "$RAW_DIR"/ 2>/dev/null || true; fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "load.sh: interrupted or over MAX_SECONDS; stopping" >&2; exit 130' INT TERM

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Cores: the load generator on the first, the servers (upstream, proxy,
# Redis) on the others. The proxies get as many cores as the servers do.
NCPU=$(nproc)
if ((NCPU >= 2)); then
  LOAD_CPUS=0
  SERVER_CPUS=1
  ((NCPU > 2)) && SERVER_CPUS=1-$((NCPU - 1))
  WORKERS=$((NCPU - 1))
  LOAD_PIN=(taskset -c "$LOAD_CPUS")
  SERVER_PIN=(taskset -c "$SERVER_CPUS")
  PINNING="load generators (wrk, launch_load) on CPU $LOAD_CPUS; upstream, nginx, ltigate and Redis on CPU $SERVER_CPUS"
else
  WORKERS=1
  LOAD_PIN=()
  SERVER_PIN=()
  PINNING="nothing pinned (1 CPU)"
fi

wait_http() { # url [seconds]
  local deadline=$((SECONDS + ${2:-15}))
  until curl -s -o /dev/null "$1"; do
    ((SECONDS < deadline)) || { echo "load.sh: $1 did not come up" >&2; exit 1; }
    sleep 0.1
  done
}

cpu_ticks() { # pids… → utime+stime, clock ticks
  local total=0 p f
  for p in "$@"; do
    [[ -r /proc/$p/stat ]] || continue
    f=$(sed 's/.*) //' "/proc/$p/stat")
    read -r -a a <<<"$f"
    total=$((total + a[11] + a[12]))
  done
  echo "$total"
}

status_kb() { # field pids… → sum of the field in kB
  local field=$1 total=0 p v
  shift
  for p in "$@"; do
    v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

nginx_pids() { echo "$NGINX_PID" $(pgrep -P "$NGINX_PID" || true); }

UP_PORT=$(free_port)
NGINX_PORT=$(free_port)
NGINX_H_PORT=$(free_port)
GATE_PORT=$(free_port)
ADMIN_PORT=$(free_port)
GATE2_PORT=$(free_port)
ADMIN2_PORT=$(free_port)
REDIS_PORT=$(free_port)
# The LTI 1.3 platform's JWKS, served by each `launch_load load13` run.
JWKS_PORT=$(free_port)

# lti13_conf: what ltigate's configuration gains for the LTI 1.3 launches:
# the tool key and the platform that launch_load load13 plays (the same
# issuer, client id and deployment as examples/launch_load/lti13.rs).
lti13_conf() {
  cat <<EOF

[outcomes]
# The platform's JWKS is served on plain http on loopback.
allow_insecure_targets = true

[lti13]
key_file = "$ROOT/tests/vectors/tool-key-rsa2048.pem"

[[platforms]]
name = "Bench13"
issuer = "https://platform.bench.test"
client_id = "bench-client"
deployment_ids = ["bench-deployment"]
auth_login_url = "https://platform.bench.test/auth"
auth_token_url = "https://platform.bench.test/token"
jwks_url = "http://127.0.0.1:$JWKS_PORT/jwks"
lms_id = "bench13"
EOF
}

# --- upstream --------------------------------------------------------------
"${SERVER_PIN[@]}" "$BIN/examples/bench_upstream" "127.0.0.1:$UP_PORT" >"$TMP/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
wait_http "http://127.0.0.1:$UP_PORT/"

# --- nginx -----------------------------------------------------------------
mkdir -p "$TMP/nginx/logs"
nginx_conf "$TMP/nginx" "$WORKERS" "$UP_PORT" "$NGINX_PORT" "$NGINX_H_PORT" >"$TMP/nginx.conf"
"${SERVER_PIN[@]}" nginx -p "$TMP/nginx" -c "$TMP/nginx.conf" -g 'daemon off;' >"$TMP/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_http "http://127.0.0.1:$NGINX_PORT/"

# --- ltigate ---------------------------------------------------------------
mkdir -p "$TMP/embedded"
ltigate_conf "$GATE_PORT" "$ADMIN_PORT" "$UP_PORT" "path = \"$TMP/embedded/ltigate.db\"" "$(lti13_conf)" >"$TMP/ltigate.toml"
"${SERVER_PIN[@]}" "$BIN/ltigate" -c "$TMP/ltigate.toml" serve >"$TMP/ltigate.log" 2>&1 &
GATE_PID=$!
PIDS+=("$GATE_PID")
wait_http "http://127.0.0.1:$ADMIN_PORT/readyz"
sleep 1
GATE_IDLE_KB=$(status_kb VmRSS "$GATE_PID")
NGINX_IDLE_KB=$(status_kb VmRSS $(nginx_pids))

# A session cookie from one real signed launch.
COOKIE=$("$BIN/examples/launch_load" cookie "127.0.0.1:$GATE_PORT" "$PUBLIC_URL" "$KEY" "$SECRET")
for port in "$UP_PORT" "$NGINX_PORT" "$NGINX_H_PORT" "$GATE_PORT"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" "http://127.0.0.1:$port/courses/C-1/page")
  [[ $code == 200 ]] || { echo "load.sh: 127.0.0.1:$port answered $code with the session cookie" >&2; exit 1; }
done

declare -A PORT=([direct]=$UP_PORT [nginx]=$NGINX_PORT [nginx-h]=$NGINX_H_PORT [ltigate]=$GATE_PORT)

wrk_run() { # target connections seconds → RESULT line
  local c=$1 threads=1
  "${LOAD_PIN[@]}" wrk -t"$threads" -c"$c" -d"$2"s --timeout 5s -s "$ROOT/benches/wrk_report.lua" \
    -H "Cookie: $COOKIE" "http://127.0.0.1:${PORT[$3]}/courses/C-1/page" | grep '^RESULT' || echo "RESULT failed=1"
}

server_ticks() { # target
  case $1 in
    direct) echo 0 ;;
    nginx | nginx-h) cpu_ticks $(nginx_pids) ;;
    ltigate) cpu_ticks "$GATE_PID" ;;
  esac
}

# --- 1. proxied requests ---------------------------------------------------
echo "== proxied requests: ${DURATION}s per point, $REPS alternating runs" >&2
: >"$TMP/proxy.tsv"
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
for c in $CONCURRENCY; do
  for target in direct nginx nginx-h ltigate; do wrk_run "$c" 1 "$target" >/dev/null; done
  for rep in $(seq "$REPS"); do
    for target in direct nginx nginx-h ltigate; do
      before=$(server_ticks "$target")
      up_before=$(cpu_ticks "$UP_PID")
      line=$(wrk_run "$c" "$DURATION" "$target")
      after=$(server_ticks "$target")
      up_after=$(cpu_ticks "$UP_PID")
      echo -e "$c\t$rep\t$target\t$((after - before))\t${line#RESULT } upstream_ticks=$((up_after - up_before))" >>"$TMP/proxy.tsv"
      echo "   c=$c run $rep $target: ${line#RESULT }" >&2
    done
  done
done
GATE_PEAK_KB=$(status_kb VmHWM "$GATE_PID")
NGINX_PEAK_KB=$(status_kb VmHWM $(nginx_pids))

# --- 2. memory -------------------------------------------------------------
echo "== memory at $MEMORY_CONNECTIONS keep-alive connections" >&2
mem_run() { # target pids… → peak summed VmRSS (kB) while wrk holds the connections
  local target=$1 peak=0 v
  shift
  wrk_run "$MEMORY_CONNECTIONS" 4 "$target" >"$TMP/mem-$target.log" &
  local w=$!
  while kill -0 "$w" 2>/dev/null; do
    v=$(status_kb VmRSS "$@")
    ((v > peak)) && peak=$v
    sleep 0.2
  done
  wait "$w" || true
  echo "$peak"
}
GATE_CONN_KB=$(mem_run ltigate "$GATE_PID")
NGINX_CONN_KB=$(mem_run nginx $(nginx_pids))
sleep 2
GATE_AFTER_KB=$(status_kb VmRSS "$GATE_PID")
{
  echo -e "ltigate\tidle_kb=$GATE_IDLE_KB\tpeak_proxy_kb=$GATE_PEAK_KB\tconn_kb=$GATE_CONN_KB\tafter_kb=$GATE_AFTER_KB\tconn_result=$(sed 's/^RESULT //' "$TMP/mem-ltigate.log")"
  echo -e "nginx\tidle_kb=$NGINX_IDLE_KB\tpeak_proxy_kb=$NGINX_PEAK_KB\tconn_kb=$NGINX_CONN_KB\tafter_kb=\tconn_result=$(sed 's/^RESULT //' "$TMP/mem-nginx.log")"
} >"$TMP/memory.tsv"

# --- 3. launches -----------------------------------------------------------
echo "== launches: ${LAUNCH_SECONDS}s per point, $REPS runs of LTI 1.1 and 1.3 alternating" >&2
: >"$TMP/launch.tsv"
: >"$TMP/login.tsv"
server_ticks_of() { # result line → its server_ticks (0 when absent)
  local t
  t=$(sed -n 's/.*server_ticks=\([0-9]*\).*/\1/p' <<<"$1")
  echo "${t:-0}"
}
launch_runs() { # store gate-port gate-pid
  local c rep line before after out login
  for c in $LAUNCH_CONCURRENCY; do
    for rep in $(seq "$REPS"); do
      before=$(cpu_ticks "$3")
      line=$("${LOAD_PIN[@]}" "$BIN/examples/launch_load" load "127.0.0.1:$2" "$PUBLIC_URL" "$KEY" "$SECRET" \
        "$c" "$LAUNCH_SECONDS" "$LEARNERS" 2>>"$TMP/launch_load.log" || echo "failed=1")
      after=$(cpu_ticks "$3")
      echo -e "$1\t1.1\t$c\t$rep\t$((after - before))\t$line" >>"$TMP/launch.tsv"
      echo "   $1 LTI 1.1 c=$c run $rep: $line" >&2
      # LTI 1.3: logins, signing, then the timed launches, in one process
      # that counts ltigate's CPU for each timed step itself.
      out=$("${LOAD_PIN[@]}" "$BIN/examples/launch_load" load13 "127.0.0.1:$2" "$PUBLIC_URL" \
        "127.0.0.1:$JWKS_PORT" "$c" "$LAUNCH_SECONDS" "$LEARNERS" "$LTI13_RATE_BOUND" "$3" \
        2>>"$TMP/launch_load.log" || echo "failed=1")
      line=$(sed '/^logins /d' <<<"$out")
      login=$(sed -n 's/^logins //p' <<<"$out")
      echo -e "$1\t1.3\t$c\t$rep\t$(server_ticks_of "$line")\t$line" >>"$TMP/launch.tsv"
      echo -e "$1\t$c\t$rep\t$(server_ticks_of "$login")\t${login:-failed=1}" >>"$TMP/login.tsv"
      echo "   $1 LTI 1.3 c=$c run $rep: $line" >&2
      echo "   $1 LTI 1.3 logins c=$c run $rep: ${login:-failed}" >&2
    done
  done
}
launch_runs embedded "$GATE_PORT" "$GATE_PID"
kill -TERM "$GATE_PID"
wait "$GATE_PID" 2>/dev/null || true

mkdir -p "$TMP/redis"
"${SERVER_PIN[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$TMP/redis" --save '' \
  --appendonly yes --appendfsync everysec --maxmemory-policy noeviction --daemonize no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
ltigate_conf "$GATE2_PORT" "$ADMIN2_PORT" "$UP_PORT" "url = \"redis://127.0.0.1:$REDIS_PORT\"" "$(lti13_conf)" >"$TMP/ltigate-redis.toml"
"${SERVER_PIN[@]}" "$BIN/ltigate" -c "$TMP/ltigate-redis.toml" serve >"$TMP/ltigate-redis.log" 2>&1 &
GATE2_PID=$!
PIDS+=("$GATE2_PID")
wait_http "http://127.0.0.1:$ADMIN2_PORT/readyz"
launch_runs redis "$GATE2_PORT" "$GATE2_PID"
LOAD_END=$(cut -d' ' -f1 /proc/loadavg)

# --- report ----------------------------------------------------------------
{
  echo "cpus=$NCPU"
  echo "cpu_model=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "kernel=$(uname -r)"
  echo "workers=$WORKERS"
  echo "pinning=$PINNING"
  echo "load_start=$LOAD_START"
  echo "load_end=$LOAD_END"
  echo "duration=$DURATION"
  echo "reps=$REPS"
  echo "launch_seconds=$LAUNCH_SECONDS"
  echo "learners=$LEARNERS"
  echo "lti13_rate_bound=$LTI13_RATE_BOUND"
  echo "memory_connections=$MEMORY_CONNECTIONS"
  echo "nginx_version=$(nginx -v 2>&1 | sed 's/.*version: //')"
  echo "wrk_version=$(wrk --version 2>&1 | head -1 | awk '{ print $2 }')"
  echo "redis_version=$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
  echo "ltigate_commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
} >"$TMP/facts.txt"
python3 "$ROOT/benches/report.py" "$TMP" | sed -e "s#$TMP#\$TMP#g" -e "s#$ROOT/##g"
