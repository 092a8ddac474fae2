#!/usr/bin/env python3
"""Where a proxy spends its time on case 1 (HTTP/1.1 keep-alive, 100 B).

- system calls: `strace -c -f` attached to the proxy's processes while a fixed amount of work
  is done: requests from `h2load --h1 -c64` (case 1) and `h2load -c32 -m2` (case 2, h2c), MiB
  through the TCP listener with `iperf3 -n` (case 5); calls per request (per MiB), per syscall;
- user space (legate only, or any proxy with --perf): `perf record -g` on the proxy during a
  wrk run, then the top symbols (self time) and the top callers;
- code and data per request, every proxy, for small HTTP/1.1 requests and for h2c:
  instructions and simulated cache misses and branch mispredictions under
  `valgrind --tool=callgrind --cache-sim=yes --branch-sim=yes`;
- legate's instructions per request under callgrind, by function, with allocator and copy
  calls.

Uses bench.py's backend and proxy configs. Writes bench/results/<stamp>-<host>-profile.md.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def h2load_requests(argv):
    return bench.parse_h2load(bench.client(argv))["succeeded"]


LOADS = {
    # case: (unit, load(n) -> units done); n = --requests (tcp: n / 50 MiB)
    "http1": ("request", lambda n: h2load_requests(
        ["h2load", "--h1", "-t1", "-c64", "-n", str(n), f"http://127.0.0.1:{bench.PORTS['HTTP_PORT']}/"])),
    "h2c": ("request", lambda n: h2load_requests(
        ["h2load", "-t1", "-c32", "-m2", "-n", str(n), f"http://127.0.0.1:{bench.PORTS['H2C_PORT']}/"])),
    "tcp": ("MiB", lambda n: json.loads(bench.client(
        ["iperf3", "-c", "127.0.0.1", "-p", str(bench.PORTS["TCP_PORT"]), "-n", f"{n // 50}M", "-J"])
    )["end"]["sum_received"]["bytes"] / (1 << 20)),
}


def syscall_table(title, unit, per_proxy):
    proxies = list(per_proxy)
    names = sorted({n for _, calls in per_proxy.values() for n in calls},
                   key=lambda n: -max(per_proxy[p][1].get(n, (0, 0))[0] / per_proxy[p][0] for p in proxies))
    lines = [title, "", f"| syscall per {unit} | " + " | ".join(proxies) + " |", "|---|" + "---|" * len(proxies)]
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
    return lines


def classify(dso, symbol):
    """A coarse owner for a sample: kernel, allocator, memcpy, clock, or the Rust crate."""
    if dso.startswith("[kernel"):
        return "kernel (syscalls, TCP, scheduler)"
    if dso == "[vdso]":
        return "clock_gettime (vdso)"
    if dso.startswith("libc"):
        if re.search(r"malloc|free|_int_|realloc|calloc|tcache", symbol):
            return "libc malloc/free"
        if re.search(r"mem(move|cpy|set|cmp)|str", symbol):
            return "libc memcpy/memset/memcmp"
        return "libc other (syscall wrappers)"
    name = symbol.lstrip("<&* ")
    name = re.sub(r"^(dyn |mut |const )+", "", name)
    crate = name.split("::", 1)[0]
    return f"{dso}: {crate}"


def perf_profile(p, seconds, run_dir, name):
    """perf with DWARF call graphs (Rust release builds keep no frame pointers). Returns the
    report text and the user-space/kernel split per request."""
    data = os.path.join(run_dir, f"perf-{name}.data")
    pids = p.pids()
    pid = pids[-1]  # nginx: the worker
    url = f"http://127.0.0.1:{bench.PORTS['HTTP_PORT']}/"
    wrk = subprocess.Popen(["taskset", "-c", bench.CLIENT_CPU, "wrk", "-t1", "-c64", f"-d{seconds + 2}s", url],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    u0, s0 = bench.cpu_seconds(pids)
    rec = subprocess.run(["perf", "record", "-F", "499", "--call-graph", "dwarf,16384", "-o", data,
                          "-p", str(pid), "--", "sleep", str(seconds)], capture_output=True, text=True)
    u1, s1 = bench.cpu_seconds(pids)
    out, _ = wrk.communicate()
    rps = bench.parse_wrk(out)["wrk_req_per_s"]
    cpu_us_per_req = ((u1 - u0) + (s1 - s0)) * 1e6 / (rps * seconds)
    if not os.path.exists(data):
        return f"perf record failed: {rec.stderr[-500:]}"

    def report(*extra):
        r = subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none"] + list(extra),
                           capture_output=True, text=True)
        lines = []
        for line in r.stdout.splitlines():
            line = re.sub(r"\s+-\s+-\s*$", "", line).rstrip()
            if line.strip() and not line.startswith("#"):
                lines.append(line)
        return lines

    groups = {}
    for line in report("--no-children", "--sort", "dso,symbol", "--percent-limit", "0"):
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)$", line)
        if m:
            g = classify(m.group(2), m.group(3))
            groups[g] = groups.get(g, 0.0) + float(m.group(1))
    text = [f"CPU during the perf window: {cpu_us_per_req:.1f} µs/request at {rps:,.0f} req/s (perf itself adds some)",
            "", "self time by owner: % of samples, ≈ µs/request"]
    for g, pct in sorted(groups.items(), key=lambda kv: -kv[1]):
        if pct >= 0.5:
            text.append(f"  {pct:6.2f}%  {pct * cpu_us_per_req / 100:5.2f} µs  {g}")
    text += ["", "self time by symbol (> 0.6 %):"]
    text += report("--no-children", "--sort", "dso,symbol", "--percent-limit", "0.6")
    return "\n".join(text)


# The loads counted under callgrind: (h2load's options, the port).
CALLGRIND_LOADS = {
    "http1": (["--h1", "-c8"], "HTTP_PORT"),
    "h2c": (["-c32", "-m2"], "H2C_PORT"),
}


def under_callgrind(argv, out_file, requests, run_dir, options=(), case="http1"):
    """Runs `argv` (a proxy) under `valgrind --tool=callgrind` with counting off, warms it up
    (2,000 requests of `case`'s load), counts `requests` more, dumps and stops it. Returns the
    dump's path and the requests done."""
    vg = subprocess.Popen(["valgrind", "--tool=callgrind", *options, f"--callgrind-out-file={out_file}",
                           "--instr-atstart=no"] + argv,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=run_dir)
    load, port = CALLGRIND_LOADS[case]
    url = f"http://127.0.0.1:{bench.PORTS[port]}/"
    try:
        bench.wait_http(bench.PORTS["HTTP_PORT"], timeout=120)
        bench.client(["h2load", *load, "-n", "2000", url])
        subprocess.run(["callgrind_control", "-i", "on", str(vg.pid)], check=True, capture_output=True)
        done = h2load_requests(["h2load", *load, "-n", str(requests), url])
        subprocess.run(["callgrind_control", "-i", "off", str(vg.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(vg.pid)], check=True, capture_output=True)
    finally:
        vg.terminate()
        vg.wait()
    if not done:
        raise RuntimeError(f"{argv[0]} answered none of the {requests} requests under callgrind")
    prefix = os.path.basename(out_file) + "."
    dump = sorted(f for f in os.listdir(run_dir) if f.startswith(prefix))[-1]
    return os.path.join(run_dir, dump), done


def callgrind(b, legate, requests, run_dir):
    """Exact per-request counts for legate under valgrind --tool=callgrind: instrumentation
    switched on after a warm-up, `requests` requests from h2load --h1 -c8, then dumped.
    Returns text: instructions per request, the top functions (self), and call counts per
    request of the allocator, memset/memcpy, format! and SipHash, with their main callers."""
    dump, requests = under_callgrind(
        [legate, "-c", b.configs["legate"], "--concurrency", "1", "-l", "warning"],
        os.path.join(run_dir, "callgrind.out"), requests, run_dir)
    tree = subprocess.run(["callgrind_annotate", "--tree=caller", "--threshold=100", dump],
                          capture_output=True, text=True).stdout
    blocks, cur = [], []
    for line in tree.splitlines():
        if line.strip():
            cur.append(line)
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)

    def short(s):
        s = re.sub(r"/root/.cargo/registry/src/index.crates.io-[0-9a-f]+/", "", s)
        s = re.sub(r"/rustc/[0-9a-f]+/library/", "", s)
        s = re.sub(r"/\S*/crates/", "", s)
        return re.sub(r" \[\S*\]$", "", s)

    funcs = []  # (self Ir, calls, name, [(calls, caller)])
    total = None
    for blk in blocks:
        for line in blk:
            if "PROGRAM TOTALS" in line:
                total = int(line.split()[0].replace(",", ""))
        star = [l for l in blk if re.match(r"^\s*[\d,]+ \([ \d.]+%\)  \*", l)]
        if not star:
            continue
        callers = []
        for l in blk:
            m = re.search(r"\(([\d,]+)x\)\s*$", l)
            if "  < " in l and m:
                callers.append((int(m.group(1).replace(",", "")), short(l.split("< ", 1)[1])))
        funcs.append((int(star[0].split()[0].replace(",", "")), sum(c for c, _ in callers),
                      short(star[0].split("*", 1)[1].strip()), sorted(callers, reverse=True)))
    n = requests
    lines = [f"{total / n:,.0f} instructions per request (user space, all threads; {n} requests)", "",
             "top functions by self instructions:"]
    for ir, calls, name, _ in sorted(funcs, reverse=True)[:15]:
        lines.append(f"  {ir / n:8,.0f} Ir/req {100 * ir / total:5.1f}%  {calls / n:6.2f} calls/req  {name[:150]}")
    lines += ["", "calls per request, and their main callers:"]
    for pat in ("malloc.c:malloc", "malloc.c:free", "malloc.c:realloc", "__memset", "__memcpy",
                "alloc::fmt::format::format_inner", "sip::Hasher<S> as core::hash::Hasher>::write"):
        for ir, calls, name, callers in funcs:
            if pat in name and calls:
                lines.append(f"  {calls / n:6.2f}/req {ir / n:8,.0f} Ir/req  {name[:110]}")
                for c, caller in callers[:5]:
                    lines.append(f"           {c / n:6.2f}/req from {caller[:140]}")
    return "\n".join(lines)


SIM_EVENTS = {
    "Ir": "instructions",
    "locked": "locked instructions (`lock` prefix, `xchg` with memory)",
    "I1mr": "I1 misses",
    "D1mr": "D1 read misses",
    "D1mw": "D1 write misses",
    "Bcm": "conditional branches mispredicted",
    "Bim": "indirect branches mispredicted",
}


def cachesim(b, proxy, requests, run_dir, case):
    """Per-request counts for one proxy under `valgrind --tool=callgrind --cache-sim=yes
    --branch-sim=yes`: the same load for every proxy (`case`'s, after a warm-up), so that
    instructions and simulated cache misses compare side by side. `legate-b` is a second
    legate build (`--legate-b`) on legate's config. Returns ({event: count per request}, the
    simulated caches' description)."""
    if proxy == "legate-b":
        argv = [b.args.legate_b] + b.argv("legate")[1:]
    else:
        argv = b.argv(proxy)
    if proxy == "nginx":
        argv += ["-g", "master_process off;"]  # one process, the one valgrind runs
    dump, done = under_callgrind(argv, os.path.join(run_dir, f"cachesim-{proxy}-{case}.out"), requests, run_dir,
                                 ["--cache-sim=yes", "--branch-sim=yes", "--dump-instr=yes"], case)
    events, totals, caches = [], [], []
    with open(dump) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("totals:"):
                totals = [int(v) for v in line.split()[1:]]
            elif line.startswith("desc: ") and "cache:" in line:
                caches.append(line[len("desc: "):].strip())
    per_request = {e: v / done for e, v in zip(events, totals)}
    per_request["locked"] = locked_instructions(dump) / done
    return per_request, "; ".join(caches)


def locked_instructions(dump):
    """How many locked instructions ran in a callgrind dump made with `--dump-instr=yes`: each
    object's executed addresses, matched against its disassembly (`objdump -d`). An atomic
    read-modify-write (a reference count, a compare-and-swap, a lock) costs tens of cycles
    however warm the line, and a callgrind instruction count does not tell it from an add."""
    names = {"ob": {}, "fl": {}, "fn": {}}
    kind = {"ob": "ob", "cob": "ob", "fn": "fn", "cfn": "fn"}
    ran = {}  # (object, address) -> executions
    obj, prev, call_line = None, [0, 0], False
    with open(dump) as f:
        for line in f:
            m = re.match(r"(c?ob|c?fn|c?fl|c?fi|c?fe)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
            if m:
                table = names[kind.get(m.group(1), "fl")]
                if m.group(3):
                    table[m.group(2)] = m.group(3)
                if m.group(1) == "ob":
                    obj = table.get(m.group(2))
                continue
            if line.startswith("calls="):
                call_line = True  # the next cost line is the call's inclusive cost
                continue
            if not line[:1] or line[0] not in "0123456789+-*":
                continue
            fields = line.split()
            for i, tok in enumerate(fields[:2]):
                if tok == "*":
                    continue
                if tok[0] in "+-":
                    prev[i] += int(tok[1:], 0) * (-1 if tok[0] == "-" else 1)
                else:
                    prev[i] = int(tok, 0)
            if call_line:
                call_line = False
                continue
            if len(fields) > 2 and obj:
                key = (obj, prev[0])
                ran[key] = ran.get(key, 0) + int(fields[2])
    total = 0
    for path in {o for o, _ in ran}:
        if not os.path.isfile(path):
            continue
        dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], capture_output=True, text=True).stdout
        for m in re.finditer(r"^\s*([0-9a-f]+):\s+(lock |xchg\s+\S*\()", dis, re.M):
            total += ran.get((path, int(m.group(1), 16)), 0)
    return total


def cachesim_table(case, requests, per_proxy, caches):
    proxies = list(per_proxy)
    load = " ".join(CALLGRIND_LOADS[case][0])
    lines = [f"## Instructions and simulated cache misses per request, {case} (`valgrind --tool=callgrind "
             f"--cache-sim=yes --branch-sim=yes`, `h2load {load} -n {requests}`)", "",
             f"Simulated caches: {caches}. Exact counts of a model, not of the CPU: they show how much "
             "code and data a request goes through, which timings on a shared machine cannot.", "",
             "| per request | " + " | ".join(proxies) + " |" + "".join(f" legate/{p} |" for p in proxies if p != "legate"),
             "|---|" + "---|" * (len(proxies) + len([p for p in proxies if p != "legate"]))]
    for event, title in SIM_EVENTS.items():
        cells = [f"{per_proxy[p].get(event, 0):,.0f}" for p in proxies]
        ratios = [f"{per_proxy['legate'].get(event, 0) / per_proxy[p][event]:.2f}"
                  if "legate" in per_proxy and per_proxy[p].get(event) else ""
                  for p in proxies if p != "legate"]
        lines.append(f"| {title} ({event}) | " + " | ".join(cells) + " |" + "".join(f" {r} |" for r in ratios))
    lines.append("")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--legate", required=True)
    ap.add_argument("--src", default=os.path.dirname(bench.HERE))
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--proxies", default="legate,nginx,haproxy")
    ap.add_argument("--strace-cases", default="http1,h2c,tcp", help="cases whose system calls to count")
    ap.add_argument("--pingora", help="the bench/peers/pingora binary (adds it to --proxies)")
    ap.add_argument("--perf", default="legate", help="proxies to run perf on")
    ap.add_argument("--perf-seconds", type=int, default=8)
    ap.add_argument("--callgrind", type=int, default=10000, metavar="N",
                    help="requests to count under callgrind (legate only; 0 = skip)")
    ap.add_argument("--cachesim", type=int, default=5000, metavar="N",
                    help="requests to count under callgrind's cache and branch simulation, for each "
                         "proxy (0 = skip)")
    ap.add_argument("--legate-b", metavar="BIN",
                    help="a second legate build, added to the cache simulation (an A/B of two builds "
                         "that the machine's load does not blur)")
    ap.add_argument("--out", default=os.path.join(bench.HERE, "results"))
    args = ap.parse_args()
    args.legate = os.path.abspath(args.legate)
    if args.legate_b:
        args.legate_b = os.path.abspath(args.legate_b)
    if args.pingora:
        args.pingora = os.path.abspath(args.pingora)
        args.proxies += ",pingora"
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
    if args.legate_b:
        lines += [f"legate-b (cache simulation only): `{args.legate_b}`", ""]
    per_case = {case: {} for case in args.strace_cases.split(",") if case}
    perf_text = {}
    try:
        b.start_backends()
        for proxy in args.proxies.split(","):
            for case in per_case:
                if case in bench.NOT_CONFIGURED.get(proxy, ()):
                    continue
                p = b.start(proxy)
                try:
                    b.warm_up(f"http://127.0.0.1:{bench.PORTS['HTTP_PORT']}/")
                    unit, load = LOADS[case]
                    done, calls = bench.strace_counts(p, b.run_dir, f"{proxy}-{case}", lambda: load(args.requests))
                    per_case[case][proxy] = (done, calls)
                    print(f"[strace {case} {proxy}] {done:.0f} {unit}s: " + ", ".join(
                        f"{k} {v[0] / done:.2f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1][0])[:8]),
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
        sim, sim_caches = {}, ""
        if args.cachesim and shutil.which("valgrind"):
            for case in CALLGRIND_LOADS:
                sim[case] = {}
                for proxy in args.proxies.split(",") + (["legate-b"] if args.legate_b else []):
                    if case in bench.NOT_CONFIGURED.get(proxy, ()):
                        continue
                    sim[case][proxy], sim_caches = cachesim(b, proxy, args.cachesim, b.run_dir, case)
                    print(f"[cachesim {case} {proxy}] " + ", ".join(
                        f"{k} {v:,.0f}" for k, v in sim[case][proxy].items()), flush=True)
        cg_text = None
        if args.callgrind and shutil.which("valgrind"):
            cg_text = callgrind(b, args.legate, args.callgrind, b.run_dir)
            print(f"[callgrind]\n{cg_text}", flush=True)
    finally:
        b.stop_backends()

    titles = {
        "http1": f"## System calls per request, case 1 (`strace -c -f`, `h2load --h1 -c64 -n {args.requests}`)",
        "h2c": f"## System calls per request, case 2 h2c (`strace -c -f`, `h2load -c32 -m2 -n {args.requests}`)",
        "tcp": f"## System calls per MiB, case 5 tcp_proxy (`strace -c -f`, `iperf3 -n {args.requests // 50}M`)",
    }
    for case, per_proxy in per_case.items():
        if per_proxy:
            lines += syscall_table(titles[case], LOADS[case][0], per_proxy)
    for proxy, text in perf_text.items():
        lines.append(f"## perf record -g, {proxy}, wrk -c64 for {args.perf_seconds} s")
        lines.append("")
        lines.append("```")
        lines.append(text)
        lines.append("```")
        lines.append("")
    for case, per_proxy in sim.items():
        if per_proxy:
            lines += cachesim_table(case, args.cachesim, per_proxy, sim_caches)
    if cg_text:
        lines.append(f"## valgrind --tool=callgrind, legate, h2load --h1 -c8 -n {args.callgrind}")
        lines.append("")
        lines.append("```")
        lines.append(cg_text)
        lines.append("```")
        lines.append("")
    md = "\n".join(lines)
    print(md)
    os.makedirs(args.out, exist_ok=True)
    path = bench.unused_base(os.path.join(args.out, f"{stamp}-{meta['host']}-profile")) + ".md"
    with open(path, "w") as f:
        f.write(md + "\n")
    print(f"wrote {path}")
    shutil.rmtree(b.run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
