#!/usr/bin/env bash
# ltigate's memory (RSS) holding many sessions, with the signed identity
# assertion off and on (benches/README.md, "The signed identity assertion"):
#
#   benches/sessions_memory.sh target/release/ltigate
#
# For each binary and each setting: starts the stub upstream and ltigate (as
# instructions.sh configures it, access log off), reads VmRSS once it is
# ready, lets LEARNERS learners launch one after the other and send one
# proxied request each with their own cookie (examples/launch_load.rs
# `sessions`: LEARNERS sessions opened, and with the assertion on LEARNERS
# assertions minted and kept), then reads VmRSS and VmHWM. Prints one line
# per run. Environment: LEARNERS [1000], REPS [3]. Needs curl, awk, python3 and
# the release examples (cargo build --release --examples). Loopback only;
# stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh
LEARNERS=${LEARNERS:-1000}
REPS=${REPS:-3}
setup sessions_memory.sh "$@"
UP=$(free_port)
"$REL/examples/bench_upstream" "127.0.0.1:$UP" >/dev/null 2>&1 &
PIDS+=("$!")
kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$2/status"; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo "| binary | assertion | run | RSS ready (MB) | RSS after $LEARNERS sessions (MB) | VmHWM (MB) | result |"
echo "|---|---|---:|---:|---:|---:|---|"
for b in "$@"; do
  for assertion in false true; do
    for rep in $(seq "$REPS"); do
      g=$(free_port)
      a=$(free_port)
      dir="$T/$assertion-$rep"
      mkdir -p "$dir"
      ltigate_conf "$g" "$a" "$UP" "path = \"$dir/ltigate.db\"" >"$dir.toml"
      LTIGATE_SERVER__ACCESS_LOG=false LTIGATE_SESSION__ASSERTION=$assertion \
        LTIGATE_SESSION__ASSERTION_AUDIENCE=https://platform.internal/bench \
        "$b" -c "$dir.toml" serve >"$dir.log" 2>&1 &
      pid=$!
      PIDS+=("$pid")
      for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$a/readyz" && break; sleep 0.1; done
      ready=$(kib VmRSS "$pid")
      result=$("$REL/examples/launch_load" sessions "127.0.0.1:$g" "$PUBLIC_URL" "$KEY" "$SECRET" "$LEARNERS")
      rss=$(kib VmRSS "$pid")
      hwm=$(kib VmHWM "$pid")
      echo "| $b | $assertion | $rep | $(mb "$ready") | $(mb "$rss") | $(mb "$hwm") | $result |"
      kill "$pid"
      wait "$pid" 2>/dev/null || true
    done
  done
done
