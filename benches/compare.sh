#!/usr/bin/env bash
# Side-by-side CPU comparison of ltigate builds against nginx, for measuring
# one change at a time (benches/README.md, "Where the time goes"):
#
#   cp target/release/ltigate /tmp/ltigate-before    # build, change, build again
#   benches/compare.sh /tmp/ltigate-before target/release/ltigate
#
# Starts the stub upstream, nginx (benches/common.sh, as load.sh: plain, and
# nginx-h sending the upstream ltigate's headers) and each given ltigate
# binary, all on the server CPU; then runs wrk (CPU 0) against nginx,
# nginx-h and each binary in turn, REPS rounds, and prints per run: requests/s
# and the CPU microseconds per request of the proxy and of the upstream
# behind it, with their user and system parts (from /proc). With SYSCALLS=1
# (needs perf, Debian's linux-perf) each line also counts, per request, the
# system calls of proxy and upstream (all / reads / writes / epoll waits)
# and their context switches. Environment: CONNECTIONS [64],
# SECONDS_PER_RUN [4], REPS [3], SYSCALLS [0]. Needs nginx, wrk, curl,
# python3 and the release examples
# (cargo build --release --examples). Loopback only; stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh
C=${CONNECTIONS:-64}
D=${SECONDS_PER_RUN:-4}
R=${REPS:-3}
SYSCALLS=${SYSCALLS:-0}
EVENTS=raw_syscalls:sys_enter,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,context-switches
setup compare.sh "$@"
if (($(nproc) >= 2)); then LOAD=(taskset -c 0); SERVER=(taskset -c 1); else LOAD=(); SERVER=(); fi
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
UP=$(free_port)
NG=$(free_port)
NH=$(free_port)
"${SERVER[@]}" "$REL/examples/bench_upstream" "127.0.0.1:$UP" >/dev/null 2>&1 &
UPID=$!
PIDS+=("$UPID")
mkdir -p "$T/nginx/logs"
nginx_conf "$T/nginx" 1 "$UP" "$NG" "$NH" >"$T/nginx.conf"
"${SERVER[@]}" nginx -p "$T/nginx" -c "$T/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 &
NPID=$!
PIDS+=("$NPID")
declare -A PORT PID NAME
PORT[nginx]=$NG
NAME[nginx]=nginx
PORT[nginx-h]=$NH
NAME[nginx-h]=nginx-h
i=0
for b in "$@"; do
  i=$((i + 1))
  g=$(free_port)
  a=$(free_port)
  mkdir -p "$T/g$i"
  ltigate_conf "$g" "$a" "$UP" "path = \"$T/g$i/ltigate.db\"" >"$T/g$i.toml"
  "${SERVER[@]}" "$b" -c "$T/g$i.toml" serve >"$T/g$i.log" 2>&1 &
  PID[b$i]=$!
  PIDS+=("${PID[b$i]}")
  PORT[b$i]=$g
  NAME[b$i]=$b
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$a/readyz" && break; sleep 0.1; done
done
sleep 0.5
COOKIE=$("$REL/examples/launch_load" cookie "127.0.0.1:${PORT[b1]}" "$PUBLIC_URL" "$KEY" "$SECRET")
PID[nginx]="$NPID $(pgrep -P "$NPID" | tr '\n' ' ')"
PID[nginx-h]=${PID[nginx]}
targets="nginx nginx-h"
for j in $(seq "$i"); do targets="$targets b$j"; done
# counted PIDS… OUT: perf's system call and context switch counts of the
# given processes for the next run's duration, in the background.
counted() {
  local out=${*: -1} pids
  pids=$(tr ' ' ',' <<<"${*:1:$#-1}")
  perf stat -x, -e "$EVENTS" -p "$pids" -o "$out" -- sleep "$D" >/dev/null 2>&1 &
  PERFS+=("$!")
}
PERFS=()
# per_request FILE N: "calls reads writes epoll ctxsw" per request.
per_request() {
  python3 - "$1" "$2" <<'PY'
import sys
counts = {}
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].isdigit():
        counts[f[2]] = counts.get(f[2], 0) + int(f[0])
n = int(sys.argv[2])
c = lambda *ev: sum(counts.get(e, 0) for e in ev) / n
print(f"calls {c('raw_syscalls:sys_enter'):.2f} reads {c('syscalls:sys_enter_recvfrom', 'syscalls:sys_enter_read'):.2f} "
      f"writes {c('syscalls:sys_enter_sendto', 'syscalls:sys_enter_writev', 'syscalls:sys_enter_write'):.2f} "
      f"epoll {c('syscalls:sys_enter_epoll_wait', 'syscalls:sys_enter_epoll_pwait'):.2f} ctxsw {c('context-switches'):.2f}")
PY
}
if [[ $SYSCALLS == 1 ]]; then
  perf stat -e "$EVENTS" -p "$UPID" -- sleep 0.1 >/dev/null 2>&1 ||
    { echo "compare.sh: SYSCALLS=1 needs perf with syscall tracepoints (apt-get install linux-perf; run as root)" >&2; exit 2; }
fi
run() { "${LOAD[@]}" wrk -t1 -c"$C" -d"$1"s -H "Cookie: $COOKIE" "http://127.0.0.1:${PORT[$2]}/courses/C-1/page"; }
for t in $targets; do run 1 "$t" >/dev/null; done
echo "$C connections, ${D} s per run, $R rounds; CPU from /proc (10 ms ticks)"
for r in $(seq "$R"); do
  for t in $targets; do
    # shellcheck disable=SC2086
    read -r pu0 ps0 <<<"$(ticks ${PID[$t]})"
    read -r uu0 us0 <<<"$(ticks "$UPID")"
    if [[ $SYSCALLS == 1 ]]; then
      # shellcheck disable=SC2086
      counted ${PID[$t]} "$T/proxy.perf"
      counted "$UPID" "$T/upstream.perf"
    fi
    out=$(run "$D" "$t")
    if ((${#PERFS[@]})); then
      wait "${PERFS[@]}"
      PERFS=()
    fi
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
    if [[ $SYSCALLS == 1 ]]; then
      echo "         per request: proxy $(per_request "$T/proxy.perf" "$n")  upstream $(per_request "$T/upstream.perf" "$n")"
    fi
  done
done
