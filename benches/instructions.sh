#!/usr/bin/env bash
# Instructions ltigate executes per proxied request, counted by callgrind:
# a measure of one change that this machine's noisy neighbours cannot move
# (benches/README.md, "Where the time goes"):
#
#   cp target/release/ltigate /tmp/ltigate-before    # build, change, build again
#   benches/instructions.sh /tmp/ltigate-before target/release/ltigate
#
# For each binary: starts the stub upstream and ltigate under
# `valgrind --tool=callgrind` (on the server CPU, so with the current-thread
# scheduler as in load.sh), opens a session with a real signed launch, sends
# 200 warm-up requests, then counts the instructions of REQUESTS more
# `GET /courses/C-1/page` on one kept-alive connection (curl, one after the
# other). Prints instructions per request and the functions that changed most
# against the first binary. User space only: system calls are not counted.
# With BROWSER=1 each request also carries the headers a browser sends
# (User-Agent, Accept, Accept-Language, Accept-Encoding, Referer,
# Sec-Fetch-*). With KEEP=DIR the callgrind profiles are kept there
# (DIR/1.callgrind for the first binary…; `callgrind_annotate FILE`).
# Environment: REQUESTS [2000], TOP [15], BROWSER [0], KEEP [none]. Needs valgrind, curl, python3 and
# the release examples (cargo build --release --examples). Loopback only;
# stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh
N=${REQUESTS:-2000}
TOP=${TOP:-15}
EXTRA=()
if [[ ${BROWSER:-0} == 1 ]]; then
  EXTRA=(
    -H "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    -H "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
    -H "Accept-Language: en-GB,en;q=0.7,nl;q=0.3"
    -H "Accept-Encoding: gzip, deflate, br, zstd"
    -H "Referer: $PUBLIC_URL/courses/C-1/"
    -H "Sec-Fetch-Dest: document" -H "Sec-Fetch-Mode: navigate" -H "Sec-Fetch-Site: same-origin"
  )
fi
setup instructions.sh "$@"
command -v callgrind_control >/dev/null || { echo "instructions.sh: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
if (($(nproc) >= 2)); then SERVER=(taskset -c 1); else SERVER=(); fi
UP=$(free_port)
"${SERVER[@]}" "$REL/examples/bench_upstream" "127.0.0.1:$UP" >/dev/null 2>&1 &
PIDS+=("$!")
i=0
for b in "$@"; do
  i=$((i + 1))
  g=$(free_port)
  a=$(free_port)
  mkdir -p "$T/g$i"
  ltigate_conf "$g" "$a" "$UP" "path = \"$T/g$i/ltigate.db\"" >"$T/g$i.toml"
  "${SERVER[@]}" valgrind --tool=callgrind --callgrind-out-file="$T/g$i.cg" "$b" -c "$T/g$i.toml" serve >"$T/g$i.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$a/readyz" && break; sleep 0.2; done
  cookie=$("$REL/examples/launch_load" cookie "127.0.0.1:$g" "$PUBLIC_URL" "$KEY" "$SECRET")
  curl -s -o /dev/null -H "Cookie: $cookie" "${EXTRA[@]}" "http://127.0.0.1:$g/courses/C-1/page?warm=[1-200]"
  callgrind_control -z "$pid" >/dev/null 2>&1
  curl -s -o /dev/null -H "Cookie: $cookie" "${EXTRA[@]}" "http://127.0.0.1:$g/courses/C-1/page?n=[1-$N]"
  callgrind_control -d "$pid" >/dev/null 2>&1
  # That dump is the first numbered file; the one written at exit is not.
  for _ in $(seq 50); do [[ -s "$T/g$i.cg.1" ]] && break; sleep 0.1; done
  echo "$T/g$i.cg.1" >"$T/g$i.file"
  if [[ -n ${KEEP:-} ]]; then
    mkdir -p "$KEEP"
    cp "$T/g$i.cg.1" "$KEEP/$i.callgrind"
  fi
  kill "$pid"
  wait "$pid" 2>/dev/null || true
done
python3 - "$N" "$TOP" "$T" "$@" <<'PY'
import re, subprocess, sys
n, top, tmp, bins = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def flat(i):
    path = open(f"{tmp}/g{i}.file").read().strip()
    out = subprocess.run(["callgrind_annotate", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    costs, total = {}, 0
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+) \([^)]*\)\s+(.*)$", line)
        if not m:
            continue
        value, name = int(m.group(1).replace(",", "")), m.group(2)
        if name == "PROGRAM TOTALS":
            total = value
            continue
        name = re.sub(r" \[[^\]]*\]$", "", name)
        costs[name] = costs.get(name, 0) + value
    return total, costs
runs = [flat(i + 1) for i in range(len(bins))]
extra = " with a browser's headers" if __import__("os").environ.get("BROWSER") == "1" else ""
print(f"{n} requests{extra} on one connection; instructions per request (callgrind, user space)")
for b, (total, _) in zip(bins, runs):
    print(f"  {total / n:9.0f}  {b}")
base_total, base = runs[0]
for b, (total, costs) in zip(bins[1:], runs[1:]):
    print(f"\nfunctions that changed most, {bins[0]} -> {b} (per request, own instructions):")
    # The thread entry points show the whole program's count: left out.
    keys = [k for k in set(base) | set(costs)
            if max(base.get(k, 0), costs.get(k, 0)) < 0.5 * min(base_total, total)]
    keys.sort(key=lambda k: -abs(costs.get(k, 0) - base.get(k, 0)))
    for k in keys[:top]:
        a, c = base.get(k, 0) / n, costs.get(k, 0) / n
        print(f"  {a:8.0f} {c:8.0f} {c - a:+8.0f}  {k[:110]}")
PY
