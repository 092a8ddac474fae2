#!/usr/bin/env python3
"""Memory per idle xDS cluster (issue 7), and admin output to compare between two builds.

`measure`: starts legate (no listener, no load) with CDS from a file, pushes N EDS clusters
with 10 endpoints each (the push of `xds_scale.py`), waits until they are all active, then
prints RSS (`/proc/<pid>/status`) and heap in use (`/memory`'s `allocated`) per cluster,
against the figures before the push. `--dump DIR` then waits for a stats flush and saves
`/stats` (text, `usedonly`, JSON, Prometheus), `/clusters` (text, JSON) and `/config_dump`.
`--then M` then pushes M clusters in all (the first N unchanged) and prints the memory each
added cluster took: the marginal cost, without the fixed costs the first figure divides among
the N clusters (code paged in by the first push, tables sized for few clusters). `--snapshot FILE` asks a legate run under `valgrind --tool=massif --vgdb=yes` (`--wrap`) for
a detailed snapshot once the clusters are applied.

`compare A B`: compares two dumps, with what changes from run to run (timestamps, uptime,
memory, the timings of the CDS update and of start-up) blanked out.

    python3 bench/xds_memory.py measure --legate target/release/legate --clusters 10000
    python3 bench/xds_memory.py measure --legate old/legate --clusters 1000 --dump /tmp/a
    python3 bench/xds_memory.py measure --legate new/legate --clusters 1000 --dump /tmp/b
    python3 bench/xds_memory.py compare /tmp/a /tmp/b

The admin listens on 127.0.0.1 (`--admin`, default 23901).
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xds_scale  # noqa: E402  (the push: the same clusters and assignments)

DUMPS = [
    ("stats", "/stats"),
    ("stats_used", "/stats?usedonly"),
    ("stats_filter", "/stats?filter=svc1[0-9]\\."),
    ("json", "/stats?format=json"),
    ("json_used", "/stats?format=json&usedonly"),
    ("prom", "/stats?format=prometheus"),
    ("prom_used", "/stats?format=prometheus&usedonly"),
    ("clusters", "/clusters"),
    ("clusters_json", "/clusters?format=json"),
    ("config_dump", "/config_dump"),
]


def publish(path, version, resources):
    with open(path + ".tmp", "w") as f:
        json.dump({"version_info": version, "resources": resources}, f)
    os.rename(path + ".tmp", path)


def measure(args):
    run_dir = tempfile.mkdtemp(prefix="xds-memory-")
    cds, eds = os.path.join(run_dir, "cds.json"), os.path.join(run_dir, "eds.json")
    publish(cds, "0", [])
    publish(eds, "0", [])
    bootstrap = os.path.join(run_dir, "bootstrap.yaml")
    with open(bootstrap, "w") as f:
        f.write(("" if args.eager_stats else "deferred_stat_options: { enable_deferred_creation_stats: true }\n") + f"""
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {args.admin} }} }}
dynamic_resources:
  cds_config: {{ path_config_source: {{ path: {cds} }} }}
""")
    command = args.wrap.split() + [args.legate, "-c", bootstrap, "--concurrency", str(args.concurrency), "-l", "warning"]
    proxy = subprocess.Popen(command)

    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{args.admin}{path}", timeout=120) as r:
            return r.read()

    def stat(name):
        for line in get(f"/stats?filter=^{name}$").decode().splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return None

    def rss_kib(field="VmRSS"):
        with open(f"/proc/{proxy.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

    try:
        for _ in range(600):
            try:
                get("/ready")
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(1)
        def sample():
            return {"heap": int(json.loads(get("/memory"))["allocated"]), "rss": rss_kib(),
                    "anon": rss_kib("RssAnon"), "file": rss_kib("RssFile")}

        def push(count, version):
            clusters, assignments = xds_scale.resources(count, 10, eds)
            pushed = time.monotonic()
            publish(eds, version, assignments)
            publish(cds, version, clusters)
            while time.monotonic() - pushed < 600:
                try:
                    if (stat("cluster_manager.active_clusters") or 0) >= count \
                            and stat("cluster_manager.warming_clusters") == 0:
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            applied = time.monotonic() - pushed
            # The memory given back 200 ms after the burst (`malloc_trim`), and then some.
            time.sleep(3)
            return applied

        def per_cluster(before, after, count):
            kib = lambda key, scale=1: round((after[key] - before[key]) / scale / count, 3)  # noqa: E731
            # RSS split: anonymous memory (heap, stacks) and file pages (the binary's code and
            # data touched for the first time by the push, a fixed cost).
            return {"rss_kib_per_cluster": kib("rss"), "heap_kib_per_cluster": kib("heap", 1024),
                    "anon_kib_per_cluster": kib("anon"), "file_kib_per_cluster": kib("file")}

        before = sample()
        applied = push(args.clusters, "1")
        after = sample()
        result = {"clusters": args.clusters, "concurrency": args.concurrency, "applied_s": round(applied, 2),
                  **per_cluster(before, after, args.clusters),
                  "rss_kib_before": before["rss"], "rss_kib_after": after["rss"]}
        if args.then:
            # The cost of one more cluster once there are many: what a fixed cost (code paged
            # in, tables sized for the first clusters) adds to the figure above is not in it.
            more = args.then - args.clusters
            push(args.then, "2")
            result["then"] = {"clusters": args.then, **per_cluster(after, sample(), more)}
        print(json.dumps(result))
        if args.dump:
            # After a stats flush (every 5 s): histograms show only latched samples.
            time.sleep(6)
            os.makedirs(args.dump, exist_ok=True)
            for name, path in DUMPS:
                with open(os.path.join(args.dump, name), "wb") as f:
                    f.write(get(path))
        if args.snapshot:
            subprocess.run(["vgdb", f"--pid={proxy.pid}", "detailed_snapshot", args.snapshot], check=False)
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait()


def normalized(name, text):
    """The dump without what changes from run to run."""
    if name.startswith("json"):
        stats = json.loads(text)
        for entry in stats.get("stats", []):
            if "histograms" in entry:
                for histogram in entry["histograms"]["computed_quantiles"]:
                    if "cds.update_duration" in histogram["name"] or "initialization_time" in histogram["name"]:
                        histogram["values"] = "N"
            elif entry.get("name") == "server.uptime" or "memory_" in entry.get("name", "") \
                    or "update_time" in entry.get("name", ""):
                entry["value"] = "N"
        text = json.dumps(stats, indent=1)
    text = re.sub(r"1[0-9]{12}", "T", text)  # milliseconds since the epoch (update_time)
    text = re.sub(r"/tmp/xds-memory-[a-z0-9_]+/", "/tmp/X/", text)
    text = re.sub(r'"last_updated": "[^"]*"', '"last_updated": X', text)
    text = re.sub(r"(memory_(allocated|heap_size|physical_size)\S*:? )\d+", r"\1M", text)
    text = re.sub(r"(envoy_server_memory_\w+\{\} )\d+", r"\1M", text)
    timed = ("initialization_time_ms", "uptime", "cds.update_duration", "cds_update_duration")
    return "\n".join(re.sub(r"\d+(\.\d+)?", "N", line) if any(t in line for t in timed) else line
                     for line in text.splitlines())


def compare(args):
    same = True
    for name, _ in DUMPS:
        with open(os.path.join(args.a, name)) as a, open(os.path.join(args.b, name)) as b:
            x, y = normalized(name, a.read()), normalized(name, b.read())
        if x == y:
            print(f"same       {name} ({len(x):,} bytes)")
            continue
        same = False
        first = next((i for i, (p, q) in enumerate(zip(x.splitlines(), y.splitlines())) if p != q), None)
        print(f"DIFFERENT  {name}: first differing line {first}")
    print("identical" if same else "different")
    return 0 if same else 1


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--legate", required=True)
    m.add_argument("--clusters", type=int, default=10000)
    m.add_argument("--then", type=int, help="then push this many clusters in all (the first ones unchanged), "
                   "and print the memory per added cluster")
    m.add_argument("--concurrency", type=int, default=1)
    m.add_argument("--admin", type=int, default=23901)
    m.add_argument("--eager-stats", action="store_true",
                   help="create every cluster's traffic stats up front (default: deferred_stat_options)")
    m.add_argument("--dump", help="directory for the admin output after the push")
    m.add_argument("--wrap", default="", help="command to run legate under, e.g. valgrind's")
    m.add_argument("--snapshot", help="massif detailed snapshot file (with --wrap 'valgrind --tool=massif --vgdb=yes')")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = ap.parse_args()
    if args.command == "measure":
        measure(args)
        return 0
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
