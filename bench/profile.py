#!/usr/bin/env python3
"""Where a proxy spends its time on case 1 (HTTP/1.1 keep-alive, 100 B).

- system calls: `strace -c -f` attached to the proxy's processes while `h2load --h1` sends a
  fixed number of requests on 64 keep-alive connections; calls per request, per syscall;
- user space (legate only, or any proxy with --perf): `perf record -g` on the proxy during a
  wrk run, then the top symbols (self time) and the top callers.

Uses bench.py's backend and proxy configs. Writes bench/results/<stamp>-<host>-profile.md.
"""

import argparse
import datetime
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def strace_counts(p, requests, run_dir, name):
    out_path = os.path.join(run_dir, f"strace-{name}.txt")
    pids = p.pids()
    argv = ["strace", "-c", "-f", "-o", out_path]
    for pid in pids:
        argv += ["-p", str(pid)]
    tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attach
    url = f"http://127.0.0.1:{bench.PORTS['HTTP_PORT']}/"
    out = bench.client(["h2load", "--h1", "-t1", "-c64", "-n", str(requests), url])
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", out)
    done = int(m.group(4))
    time.sleep(0.2)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    calls = {}
    with open(out_path) as f:
        for line in f:
            parts = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(parts) >= 5 and re.match(r"^[\d.]+$", parts[0]) and parts[-1] != "total":
                n_calls = int(parts[3])
                errors = int(parts[4]) if len(parts) == 6 else 0
                calls[parts[-1]] = (n_calls, errors)
    return done, calls


def perf_profile(p, seconds, run_dir, name):
    data = os.path.join(run_dir, f"perf-{name}.data")
    pid = p.pids()[-1]  # nginx: the worker
    rec = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o", data, "-p", str(pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    url = f"http://127.0.0.1:{bench.PORTS['HTTP_PORT']}/"
    bench.client(["wrk", "-t1", "-c64", f"-d{seconds}s", url])
    rec.send_signal(signal.SIGINT)
    _, err = rec.communicate(timeout=60)
    if rec.returncode not in (0, -2, 130) or not os.path.exists(data):
        return f"perf record failed: {err.decode()[-500:]}"
    flat = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "--sort", "dso,symbol",
                           "-g", "none", "--percent-limit", "0.7"], capture_output=True, text=True).stdout
    children = subprocess.run(["perf", "report", "-i", data, "--children", "--stdio", "--sort", "symbol",
                               "-g", "none", "--percent-limit", "4"], capture_output=True, text=True).stdout
    keep = lambda text: "\n".join(l for l in text.splitlines() if l.strip() and not l.startswith("#"))  # noqa: E731
    return "self time (dso, symbol):\n" + keep(flat) + "\n\nincluding callees (symbol):\n" + keep(children)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--legate", required=True)
    ap.add_argument("--src", default=os.path.dirname(bench.HERE))
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--proxies", default="legate,nginx,haproxy")
    ap.add_argument("--perf", default="legate", help="proxies to run perf on")
    ap.add_argument("--perf-seconds", type=int, default=8)
    ap.add_argument("--out", default=os.path.join(bench.HERE, "results"))
    args = ap.parse_args()
    args.legate = os.path.abspath(args.legate)
    # Bench() wants these.
    args.duration, args.idle_conns, args.quick = 10, 0, False
    os.sched_setaffinity(0, {int(bench.CLIENT_CPU)})
    b = bench.Bench(args)
    lines = []
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M")
    meta = bench.metadata(args)
    lines.append(f"# profile of case 1 (HTTP/1.1 keep-alive, 100 B, 64 connections), {meta['date']} on {meta['host']}")
    lines.append("")
    lines.append(f"legate {meta['versions']['legate']}; {meta['versions']['nginx']}; {meta['versions']['haproxy']}")
    lines.append("")
    per_proxy = {}
    perf_text = {}
    try:
        b.start_backends()
        for proxy in args.proxies.split(","):
            p = b.start(proxy)
            try:
                b.warm_up(f"http://127.0.0.1:{bench.PORTS['HTTP_PORT']}/")
                done, calls = strace_counts(p, args.requests, b.run_dir, proxy)
                per_proxy[proxy] = (done, calls)
                print(f"[strace {proxy}] {done} requests: " +
                      ", ".join(f"{k} {v[0] / done:.2f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1][0])),
                      flush=True)
            finally:
                p.stop()
            if proxy in args.perf.split(",") and shutil.which("perf"):
                p = b.start(proxy)
                try:
                    perf_text[proxy] = perf_profile(p, args.perf_seconds, b.run_dir, proxy)
                finally:
                    p.stop()
                print(f"[perf {proxy}]\n{perf_text[proxy]}", flush=True)
    finally:
        b.stop_backends()

    proxies = list(per_proxy)
    names = sorted({n for _, calls in per_proxy.values() for n in calls},
                   key=lambda n: -max(per_proxy[p][1].get(n, (0, 0))[0] / per_proxy[p][0] for p in proxies))
    lines.append(f"## System calls per request (`strace -c -f`, `h2load --h1 -c64 -n {args.requests}`)")
    lines.append("")
    lines.append("| syscall | " + " | ".join(proxies) + " |")
    lines.append("|---|" + "---|" * len(proxies))
    for n in names:
        cells = []
        for p in proxies:
            done, calls = per_proxy[p]
            c, e = calls.get(n, (0, 0))
            cells.append((f"{c / done:.3f}" if c else "") + (f" ({e / done:.3f} err)" if e else ""))
        if any(cells):
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(
        f"**{sum(c for c, _ in per_proxy[p][1].values()) / per_proxy[p][0]:.2f}**" for p in proxies) + " |")
    lines.append("")
    for proxy, text in perf_text.items():
        lines.append(f"## perf record -g, {proxy}, wrk -c64 for {args.perf_seconds} s")
        lines.append("")
        lines.append("```")
        lines.append(text)
        lines.append("```")
        lines.append("")
    md = "\n".join(lines)
    print(md)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{stamp}-{meta['host']}-profile.md")
    with open(path, "w") as f:
        f.write(md + "\n")
    print(f"wrote {path}")
    shutil.rmtree(b.run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
