#!/usr/bin/env python3
"""xDS at scale (issue 7): 10,000 clusters and 100,000 endpoints pushed through CDS/EDS while
a steady load runs, against legate alone (the peers have no xDS).

Push: the clusters and their endpoints are written as DiscoveryResponse files and swapped in
by rename (`path_config_source`, Envoy's filesystem xDS). Figures:
  - time from the push until every cluster is active with its endpoints (admin stats);
  - RSS per cluster once applied, with no traffic on them;
  - p99 of the steady load (wrk -t1 -c16 against a static route) during the push, next to
    the same load's p99 on a quiet proxy.

Run through `bench/run.sh --xds-scale` (installs nginx and wrk, builds legate). Standard
library only; everything on 127.0.0.1.
"""

import argparse
import datetime
import json
import os
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (shared process, port and parsing helpers)

CDS_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def prepare(path, version, resources):
    """Writes the next version of a DiscoveryResponse file beside it; `swap` puts it in place."""
    with open(path + ".next", "w") as f:
        json.dump({"version_info": version, "resources": resources}, f)


def swap(path):
    os.rename(path + ".next", path)


def publish(path, version, resources):
    prepare(path, version, resources)
    swap(path)


def stat(admin, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?filter=^{name}$", timeout=10) as r:
        for line in r.read().decode().splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
    return None


def bootstrap(run_dir, cds_path, deferred):
    port, admin, backend = bench.PORTS["HTTP_PORT"], bench.PORTS["ADMIN_PORT"], bench.PORTS["BACKEND_PORT"]
    text = ("deferred_stat_options: { enable_deferred_creation_stats: true }\n" if deferred else "") + f"""
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
dynamic_resources:
  cds_config: {{ path_config_source: {{ path: {cds_path} }} }}
static_resources:
  listeners:
  - name: http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - {{ match: {{ prefix: "/" }}, route: {{ cluster: backend }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {backend} }} }} }} }}] }}]
"""
    path = os.path.join(run_dir, "xds-scale.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def resources(clusters, endpoints_per_cluster, eds_path):
    cds, eds = [], []
    for i in range(clusters):
        name = f"svc{i}"
        cds.append({"@type": CDS_TYPE, "name": name, "type": "EDS", "connect_timeout": "1s",
                    "eds_cluster_config": {"eds_config": {"path_config_source": {"path": eds_path}}}})
        lb = [{"endpoint": {"address": {"socket_address": {
            "address": f"127.{(i >> 8) & 255}.{i & 255}.{1 + j}", "port_value": 8080}}}}
            for j in range(endpoints_per_cluster)]
        eds.append({"@type": EDS_TYPE, "cluster_name": name, "endpoints": [{"lb_endpoints": lb}]})
    return cds, eds


def wrk(seconds):
    url = f"http://127.0.0.1:{bench.PORTS['HTTP_PORT']}/"
    return bench.parse_wrk(bench.client(["wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", url]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--legate", required=True)
    ap.add_argument("--src", default=os.path.dirname(bench.HERE))
    ap.add_argument("--clusters", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=10, help="endpoints per cluster")
    ap.add_argument("--load-seconds", type=int, default=20)
    ap.add_argument("--eager-stats", action="store_true",
                    help="create every cluster's traffic stats up front (default: deferred_stat_options)")
    args = ap.parse_args()
    # This script is the control plane: writing 15 MB of DiscoveryResponse and polling admin
    # are its work, kept off the proxy's CPU as the load generator is (bench.py does the same).
    os.sched_setaffinity(0, {int(bench.CLIENT_CPU)})
    b = bench.Bench(argparse.Namespace(legate=args.legate, duration=10))
    admin = bench.PORTS["ADMIN_PORT"]
    cds_path = os.path.join(b.run_dir, "cds.json")
    eds_path = os.path.join(b.run_dir, "eds.json")
    publish(cds_path, "0", [])
    publish(eds_path, "0", [])
    cds, eds = resources(args.clusters, args.endpoints, eds_path)
    b.start_backends()
    proxy = bench.Proc("legate", [args.legate, "-c", bootstrap(b.run_dir, cds_path, not args.eager_stats), "--concurrency", "1",
                                  "-l", "warning"], b.run_dir)
    result = {}
    try:
        bench.wait_http(bench.PORTS["HTTP_PORT"], proc=proxy)
        # The push's files are written before the load starts: serializing 15 MB of JSON is the
        # control plane's work, not the proxy's, and would share the load generator's CPU.
        prepare(eds_path, "1", eds)
        prepare(cds_path, "1", cds)
        wrk(1)
        quiet = wrk(10)
        time.sleep(0.5)
        rss_before = bench.rss_kib(proxy.pids())
        anon_before = bench.rss_kib(proxy.pids(), "RssAnon")
        # The push, 2 s into a steady load.
        during = {}
        load = threading.Thread(target=lambda: during.update(wrk(args.load_seconds)))
        load.start()
        time.sleep(2)
        pushed = time.monotonic()
        swap(eds_path)
        swap(cds_path)
        applied = None
        while time.monotonic() - pushed < 300:
            active = stat(admin, "cluster_manager.active_clusters") or 0
            warming = stat(admin, "cluster_manager.warming_clusters")
            if active >= args.clusters + 1 and warming == 0:
                applied = time.monotonic() - pushed
                break
            time.sleep(0.05)
        load.join()
        time.sleep(1)
        rss_after = bench.rss_kib(proxy.pids())
        anon_after = bench.rss_kib(proxy.pids(), "RssAnon")
        result = {
            "clusters": args.clusters, "endpoints": args.clusters * args.endpoints,
            "applied_s": applied, "rss_before_kib": rss_before, "rss_after_kib": rss_after,
            "kib_per_cluster": (rss_after - rss_before) / args.clusters,
            # Of which anonymous memory (heap: what the clusters hold); the rest is file pages,
            # mostly the binary's own code that the push's paths paged in once.
            "anon_kib_per_cluster": (anon_after - anon_before) / args.clusters,
            "quiet_p99_ms": quiet.get("p99_ms"), "push_p99_ms": during.get("p99_ms"),
            "quiet_req_per_s": quiet.get("wrk_req_per_s"), "push_req_per_s": during.get("wrk_req_per_s"),
            "push_non_2xx": during.get("non_2xx"), "push_socket_errors": during.get("socket_errors"),
            "membership_total_svc0": stat(admin, "cluster.svc0.membership_total"),
        }
    finally:
        proxy.stop()
        b.stop_backends()
    meta = bench.metadata(argparse.Namespace(legate=args.legate, src=args.src, pingora=None))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M")
    out = bench.unused_base(os.path.join(bench.HERE, "results", f"{stamp}-{meta.get('host', 'host')}-xds-scale"))
    ratio = (result["push_p99_ms"] / result["quiet_p99_ms"]) if result.get("quiet_p99_ms") else None
    lines = [
        f"# xDS scale — {stamp} ({meta.get('cpu_model', '')}, nproc {meta.get('nproc', '')}, legate {meta['versions']['legate']})",
        "",
        f"{result['clusters']:,} EDS clusters and {result['endpoints']:,} endpoints pushed through "
        "CDS/EDS files (path_config_source, atomic rename) into legate --concurrency 1, during a steady "
        "wrk -t1 -c16 load on a static route; traffic stats "
        + ("created up front." if args.eager_stats else "deferred (`deferred_stat_options`)."),
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| time from push to every cluster active with endpoints | {result['applied_s']:.2f} s | — |"
        if result["applied_s"] is not None else "| time from push to applied | not applied in 300 s | — |",
        f"| RSS per cluster (10 endpoints each, no traffic) | {result['kib_per_cluster']:.2f} KiB | < 2 KiB (Envoy ~15) |",
        f"| of which anonymous (the rest: file pages, code paged in once) | {result['anon_kib_per_cluster']:.2f} KiB | — |",
        f"| p99 quiet | {result['quiet_p99_ms']:.2f} ms | — |",
        f"| p99 during the push | {result['push_p99_ms']:.2f} ms | ≤ 2× quiet |",
        f"| p99 ratio push/quiet | {ratio:.2f} | ≤ 2 |" if ratio else "| p99 ratio | n/a | ≤ 2 |",
        f"| failed requests during the push | {result['push_non_2xx'] + result['push_socket_errors']} | 0 |",
        "",
    ]
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines))
    with open(out + ".json", "w") as f:
        json.dump({"meta": meta, "result": result}, f, indent=2)
    print("\n".join(lines))
    print(f"written: {out}.md")


if __name__ == "__main__":
    main()
