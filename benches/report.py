#!/usr/bin/env python3
"""Turns the raw results of benches/load.sh (a directory) into Markdown:
machine facts, configurations, the proxied-request, memory and launch tables,
and the targets met or missed. Medians are taken per measured point over the
repeated runs, each statistic on its own."""

import statistics
import sys
from pathlib import Path

TICKS = 100  # /proc clock ticks per second (getconf CLK_TCK)


def kv(text):
    out = {}
    for part in text.split():
        if "=" in part:
            k, v = part.split("=", 1)
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ms(us):
    return "–" if us is None else f"{us / 1000:.3f}"


def mb(kb):
    return "–" if not kb else f"{kb / 1024:.1f}"


def verdict(ok):
    return "**met**" if ok else "**missed**"


def main(raw):
    raw = Path(raw)
    facts = dict(
        line.split("=", 1) for line in (raw / "facts.txt").read_text().splitlines() if "=" in line
    )
    out = []
    w = out.append

    # --- proxied requests ---------------------------------------------------
    runs = {}
    for line in (raw / "proxy.tsv").read_text().splitlines():
        c, rep, target, ticks, rest = line.split("\t", 4)
        r = kv(rest)
        runs.setdefault((int(c), target), []).append((int(ticks), r))
    conc = sorted({c for c, _ in runs})
    stats = {}
    for key, rs in runs.items():
        ok = [(t, r) for t, r in rs if "requests" in r and r["duration_us"] > 0]
        rps = [r["requests"] / (r["duration_us"] / 1e6) for _, r in ok]
        cpu = [t / TICKS / r["requests"] * 10_000 for t, r in ok if r["requests"] > 0]
        up_cpu = [
            r["upstream_ticks"] / TICKS / r["requests"] * 10_000
            for _, r in ok
            if r["requests"] > 0 and "upstream_ticks" in r
        ]
        stats[key] = {
            "rps": med(rps),
            "runs": rps,
            "p50": med([r["p50_us"] for _, r in ok]),
            "p99": med([r["p99_us"] for _, r in ok]),
            "p999": med([r["p999_us"] for _, r in ok]),
            "cpu": med(cpu) if key[1] != "direct" else None,
            "up_cpu": med(up_cpu),
            "errors": sum(int(r.get("socket_errors", 0) + r.get("status_errors", 0)) for _, r in ok)
            + (len(rs) - len(ok)),
        }

    w("### Machine and method\n")
    w(f"- {facts['cpus']} CPUs ({facts['cpu_model']}), Linux {facts['kernel']}; "
      f"1-minute load average {facts['load_start']} at the start of the measurements, "
      f"{facts['load_end']} at the end.")
    w(f"- Pinned: {facts['pinning']}. nginx `worker_processes {facts['workers']}`; ltigate's "
      f"tokio runtime sizes itself to its affinity mask ({facts['workers']} worker thread(s); "
      f"with one, the current-thread scheduler).")
    w(f"- nginx {facts['nginx_version']}, wrk {facts['wrk_version']} (1 thread), "
      f"Redis {facts['redis_version']}, ltigate {facts['ltigate_commit']} (release profile).")
    w(f"- Proxied requests: `GET /courses/C-1/page` with the session cookie from one real signed "
      f"launch (sent to all three targets); the upstream answers 200 with 64 bytes. "
      f"{facts['duration']} s per run, {facts['reps']} runs per point in the order direct, nginx, "
      f"nginx-h, ltigate, after a 1 s warm-up of each; nginx-h is the same nginx sending the "
      f"upstream the forwarding and identity headers ltigate sends (a like-for-like line: the "
      f"upstream, which shares the server CPU, parses them); every figure is the median of the runs, each "
      f"statistic on its own. CPU seconds per 10k requests from /proc (10 ms ticks; nginx: master "
      f"+ workers).")
    w(f"- Launches: `examples/launch_load`, {facts['learners']} learners cycling (a class "
      f"relaunching), {facts['launch_seconds']} s per run, {facts['reps']} runs per point, LTI 1.1 "
      f"and 1.3 alternating; accepted = 303 with a session cookie. LTI 1.1 (`load`): signed "
      f"25-parameter launches, fresh nonce each, signed in the timed loop. LTI 1.3 (`load13`): the "
      f"load generator plays the platform (RSA-2048 key, its JWKS on loopback, fetched once by "
      f"ltigate and cached); before the timed part it logs in once per launch "
      f"({facts.get('lti13_rate_bound', '?')} × {facts['launch_seconds']} s + concurrency logins, "
      f"timed on their own: logins/s) and signs an id_token for each on every core; only the "
      f"launch POSTs (id_token, state, state cookie) are timed. Upstream API calls go to the same "
      f"stub upstream. Redis: `appendonly yes`, `appendfsync everysec`.\n")

    w("### Proxied requests with a session\n")
    w("| concurrency | target | req/s (median) | runs (req/s) | p50 ms | p99 ms | p99.9 ms | proxy CPU s / 10k req | upstream CPU s / 10k req | errors |")
    w("|---:|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for c in conc:
        for target in ("direct", "nginx", "nginx-h", "ltigate"):
            s = stats.get((c, target))
            if not s:
                continue
            runs_txt = ", ".join(f"{v:,.0f}" for v in s["runs"])
            cpu = "–" if s["cpu"] is None else f"{s['cpu']:.3f}"
            up_cpu = "–" if s["up_cpu"] is None else f"{s['up_cpu']:.3f}"
            w(f"| {c} | {target} | {s['rps']:,.0f} | {runs_txt} | {ms(s['p50'])} | {ms(s['p99'])} | "
              f"{ms(s['p999'])} | {cpu} | {up_cpu} | {s['errors']} |")
    w("")

    # --- memory -------------------------------------------------------------
    mem = {}
    for line in (raw / "memory.tsv").read_text().splitlines():
        name, *fields = line.split("\t")
        m = {}
        for f in fields:
            k, v = f.split("=", 1)
            m[k] = v
        mem[name] = m

    def kbv(name, key):
        try:
            return float(mem[name][key])
        except (KeyError, ValueError):
            return None

    conns = facts["memory_connections"]
    w("### Memory (RSS, MB)\n")
    w(f"| process | idle after start | peak over the proxied runs | peak at {conns} keep-alive connections | idle after the load |")
    w("|---|---:|---:|---:|---:|")
    w(f"| ltigate | {mb(kbv('ltigate', 'idle_kb'))} | {mb(kbv('ltigate', 'peak_proxy_kb'))} | "
      f"{mb(kbv('ltigate', 'conn_kb'))} | {mb(kbv('ltigate', 'after_kb'))} |")
    w(f"| nginx (master + workers) | {mb(kbv('nginx', 'idle_kb'))} | {mb(kbv('nginx', 'peak_proxy_kb'))} | "
      f"{mb(kbv('nginx', 'conn_kb'))} | – |")
    w(f"\nAt {conns} connections (wrk, 4 s): ltigate `{mem.get('ltigate', {}).get('conn_result', '')}`; "
      f"nginx `{mem.get('nginx', {}).get('conn_result', '')}`. Peak over the proxied runs is VmHWM "
      f"(for nginx the sum over its processes); the connection figure is the highest VmRSS "
      f"sampled every 0.2 s.\n")

    # --- launches -----------------------------------------------------------
    def rate_row(rs):
        """Medians of a point's runs: rate, runs text, latencies, ltigate CPU
        ms per accepted request, load generator busy, refused + failed."""
        ok = [(t, r) for t, r in rs if "rate" in r]
        cpu = med([t / TICKS / r["accepted"] * 1000 for t, r in ok if r["accepted"] > 0])
        return {
            "rate": med([r["rate"] for _, r in ok]),
            "runs": ", ".join(f"{r['rate']:,.0f}" for _, r in ok),
            "p50": med([r["p50_us"] for _, r in ok]),
            "p99": med([r["p99_us"] for _, r in ok]),
            "p999": med([r["p999_us"] for _, r in ok]),
            "cpu": cpu,
            "busy": med([r["loadgen_cpu"] for _, r in ok]),
            "bad": sum(int(r.get("refused", 0) + r.get("failed", 0)) for _, r in rs),
            "exhausted": sum(1 for _, r in ok if r.get("exhausted") == 1),
        }

    def cells(s):
        rate = "–" if s["rate"] is None else f"{s['rate']:,.0f}"
        cpu = "–" if s["cpu"] is None else f"{s['cpu']:.3f}"
        busy = "–" if s["busy"] is None else f"{s['busy'] * 100:.0f} %"
        return (f"{rate} | {s['runs']} | {ms(s['p50'])} | {ms(s['p99'])} | {ms(s['p999'])} | "
                f"{cpu} | {busy} | {s['bad']} |")

    lruns = {}
    for line in (raw / "launch.tsv").read_text().splitlines():
        fields = line.split("\t", 5)
        if len(fields) == 5:  # raw results from before the LTI 1.3 runs
            fields.insert(1, "1.1")
        store, version, c, rep, ticks, rest = fields
        lruns.setdefault((store, int(c), version), []).append((int(ticks), kv(rest)))
    lstats = {}
    w("### Launches per second\n")
    w("| store | concurrency | LTI version | launches/s (median) | runs | p50 ms | p99 ms | p99.9 ms | ltigate CPU ms / launch | load generator CPU busy | refused / failed |")
    w("|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|")
    exhausted = 0
    for (store, c, version), rs in sorted(lruns.items()):
        s = rate_row(rs)
        lstats[(store, c, version)] = (s["rate"], s["busy"])
        exhausted += s["exhausted"]
        w(f"| {store} | {c} | {version} | {cells(s)}")
    w("")
    w("LTI 1.3: only the launch POSTs are timed (the logins and the id_tokens' signing come "
      "first), and ltigate's CPU is counted over the timed launches alone.")
    if exhausted:
        w(f"In {exhausted} LTI 1.3 run(s) the prepared launches ran out before the run's end "
          "(raise `LTI13_RATE_BOUND`): the rate is over the shorter time.")
    w("")

    login_path = raw / "login.tsv"
    if login_path.exists() and login_path.read_text().strip():
        gruns = {}
        for line in login_path.read_text().splitlines():
            store, c, rep, ticks, rest = line.split("\t", 4)
            gruns.setdefault((store, int(c)), []).append((int(ticks), kv(rest)))
        w("### LTI 1.3 logins per second\n")
        w("The logins each LTI 1.3 run makes before its launches (`GET /lti/1.3/login` → 302 "
          "with the state and its cookie; nothing stored), timed on their own.\n")
        w("| store | concurrency | logins/s (median) | runs | p50 ms | p99 ms | p99.9 ms | ltigate CPU ms / login | load generator CPU busy | refused / failed |")
        w("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        for (store, c), rs in sorted(gruns.items()):
            w(f"| {store} | {c} | {cells(rate_row(rs))}")
        w("")

    # --- targets ------------------------------------------------------------
    w("### Targets\n")
    for c in (16, 64, 256):
        g, n = stats.get((c, "ltigate")), stats.get((c, "nginx"))
        if not (g and n):
            continue
        ratio = g["rps"] / n["rps"]
        w(f"- Throughput ≥ nginx at concurrency {c}: {g['rps']:,.0f} vs {n['rps']:,.0f} req/s "
          f"({(ratio - 1) * 100:+.1f} %) — {verdict(ratio >= 1)}")
        h = stats.get((c, "nginx-h"))
        if h and None not in (g["cpu"], g["up_cpu"], h["cpu"], h["up_cpu"], n["cpu"], n["up_cpu"]):
            w(f"  - like for like, against nginx-h (the same headers to the upstream): "
              f"{g['rps']:,.0f} vs {h['rps']:,.0f} req/s ({(g['rps'] / h['rps'] - 1) * 100:+.1f} %); "
              f"server CPU per request (proxy + upstream) {(g['cpu'] + g['up_cpu']) * 100:.1f} vs "
              f"{(h['cpu'] + h['up_cpu']) * 100:.1f} µs (nginx: {(n['cpu'] + n['up_cpu']) * 100:.1f} µs)")
    for c in conc:
        g, n = stats.get((c, "ltigate")), stats.get((c, "nginx"))
        if not (g and n):
            continue
        ratio = g["p99"] / n["p99"]
        w(f"- p99 ≤ 1.2 × nginx at concurrency {c}: {ms(g['p99'])} vs {ms(n['p99'])} ms "
          f"(× {ratio:.2f}) — {verdict(ratio <= 1.2)}")
    g1, d1 = stats.get((1, "ltigate")), stats.get((1, "direct"))
    if g1 and d1:
        added = g1["p50"] - d1["p50"]
        w(f"- Added latency over direct at concurrency 1 ≤ 100 µs (median): {added:.0f} µs "
          f"({d1['p50']:.0f} → {g1['p50']:.0f} µs) — {verdict(added <= 100)}")
    for version, store, goal in (("1.1", "embedded", 5000), ("1.1", "redis", 3000), ("1.3", "redis", 3000)):
        best = max(
            ((r, b, c) for (s, c, v), (r, b) in lstats.items() if s == store and v == version and r),
            default=None,
        )
        if best:
            rate, busy, c = best
            limit = " (load generator near its limit)" if busy > 0.9 else f" (load generator {busy * 100:.0f} % busy: not the limit)"
            w(f"- LTI {version} launches ≥ {goal:,}/s with {store}: {rate:,.0f}/s at concurrency {c}{limit} — "
              f"{verdict(rate >= goal)}" + ("" if rate >= goal else f", {(1 - rate / goal) * 100:.0f} % short"))
    idle, conn = kbv("ltigate", "idle_kb"), kbv("ltigate", "conn_kb")
    if idle:
        w(f"- ≤ 30 MB RSS idle: {mb(idle)} MB — {verdict(idle <= 30 * 1024)}")
    if conn:
        w(f"- ≤ 100 MB at {conns} keep-alive connections: {mb(conn)} MB — {verdict(conn <= 100 * 1024)}")
    w("")

    w("### Configurations\n")
    w("nginx:\n\n```nginx\n" + (raw / "nginx.conf").read_text().rstrip() + "\n```\n")
    w("ltigate (the Redis run differs only in `[store] url = \"redis://127.0.0.1:…\"`; the "
      "`[outcomes]`, `[lti13]` and `[[platforms]]` parts are for the LTI 1.3 launches):\n\n```toml\n"
      + (raw / "ltigate.toml").read_text().rstrip() + "\n```")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
