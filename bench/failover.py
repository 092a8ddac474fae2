#!/usr/bin/env python3
"""Failover that users do not notice (issue 4), measured.

Three upstream hosts (separate processes of this script, `failover.py upstream`), legate in
front with examples/fast-failover.yaml (addresses and ports replaced, nothing else), steady
load from a keep-alive client with several concurrent connections. For each case on a fresh
legate and fresh hosts — crash, blackhole, overload, recovery — it prints the requests sent,
the client-visible errors, when the bad host received its last request (first, for recovery)
and the cluster's stats from legate's admin /stats, before and after.

Hosts answer `200 ok`, and `/healthz` with 200. Faults, sent by signal to host 0:
- SIGKILL: crash (the process ends, its port refuses, its connections close);
- SIGUSR1: blackhole (connections stay open, requests and health checks are read and never
  answered; new connections are still accepted);
- SIGUSR2: overload (each request other than a health check gets 503 with probability 1/2;
  health checks still pass, so only outlier detection can eject it);
- restart of a crashed host: recovery.
Every request a host reads is written to its stdout with its CLOCK_MONOTONIC time, which is
the same clock in every process of the machine.

Standard library only; see bench/README.md.
"""

import argparse
import asyncio
import datetime
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
HOST_PORTS = [22001, 22002, 22003]
LISTEN_PORT = 22080
ADMIN_PORT = 22090
CLUSTER = "app"


# === the upstream host (a subprocess) ===

def upstream_main(port):
    mode = {"m": "normal"}
    signal.signal(signal.SIGUSR1, lambda *_: mode.update(m="blackhole"))
    signal.signal(signal.SIGUSR2, lambda *_: mode.update(m="overload"))
    signal.signal(signal.SIGHUP, lambda *_: mode.update(m="normal"))

    def log(kind):
        os.write(1, f"{time.monotonic():.6f} {kind}\n".encode())

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if m:
                    await reader.readexactly(int(m.group(1)))
                hc = head.startswith(b"GET /healthz ")
                if mode["m"] == "blackhole":
                    log("hc-hang" if hc else "hang")
                    await asyncio.Event().wait()  # never answers; the connection stays open
                status = 200
                if mode["m"] == "overload" and not hc and random.random() < 0.5:
                    status = 503
                log("hc" if hc else str(status))
                body = b"ok" if status == 200 else b"busy"
                reason = b"OK" if status == 200 else b"Service Unavailable"
                writer.write(b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n\r\n%s" % (status, reason, len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True, backlog=1024)
        os.write(1, b"ready\n")
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


class Host:
    """One upstream host process and the requests it logged: (monotonic time, kind)."""

    def __init__(self, index, port):
        self.index, self.port = index, port
        self.events = []
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "upstream", "--port",
                                      str(self.port)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"host {self.index} did not start")
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def _read(self, proc):
        for line in proc.stdout:
            t, kind = line.decode().split()
            self.events.append((float(t), kind))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def requests(self, after=None):
        return [t for t, k in self.events if not k.startswith("hc") and (after is None or t >= after)]


# === legate and its stats ===

def failover_config(src, out_path, no_traffic_interval=None, max_retries=None):
    with open(os.path.join(src, "examples", "fast-failover.yaml")) as f:
        text = f.read()
    text = text.replace("address: 0.0.0.0, port_value: 8080", f"address: 127.0.0.1, port_value: {LISTEN_PORT}")
    text = text.replace("port_value: 9901", f"port_value: {ADMIN_PORT}")
    for i, port in enumerate(HOST_PORTS):
        text = text.replace(f"address: 10.0.0.1{i + 1}, port_value: 8000", f"address: 127.0.0.1, port_value: {port}")
    if "10.0.0." in text or "8080" in text:
        raise RuntimeError("examples/fast-failover.yaml changed shape: update failover_config()")
    if no_traffic_interval:
        # A deviation from the recipe, on request only: Envoy (and legate) check every
        # no_traffic_interval (default 60 s) until the cluster has carried traffic, and the
        # timer armed then is not shortened when traffic starts.
        text, n = re.subn(r"(\n(\s+)interval: 2s\n)", rf"\1\2no_traffic_interval: {no_traffic_interval}\n", text)
        if n != 1:
            raise RuntimeError("could not add no_traffic_interval to the health check")
    if max_retries:
        # A deviation from the recipe, on request only: the cluster's retry circuit breaker
        # (Envoy's default max_retries is 3 retries in flight).
        text, n = re.subn(r"(\n  - name: app\n    type: STATIC\n)",
                          rf"\1    circuit_breakers: {{ thresholds: [{{ max_retries: {max_retries} }}] }}\n", text)
        if n != 1:
            raise RuntimeError("could not add circuit_breakers to the cluster")
    with open(out_path, "w") as f:
        f.write(text)
    return text


def stats():
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}/stats", timeout=2) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if name.startswith(f"cluster.{CLUSTER}.") and value.strip().lstrip("-").isdigit():
            out[name[len(f"cluster.{CLUSTER}."):]] = int(value)
    return out


def clusters_flags():
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}/clusters", timeout=2) as r:
        return [line for line in r.read().decode().splitlines() if "health_flags" in line]


INTERESTING = re.compile(r"retry|outlier_detection|health_check|connect_fail|membership|per_try_timeout|"
                         r"upstream_rq_timeout|upstream_rq_5xx|upstream_rq_503|upstream_rq_504|cx_destroy|"
                         r"upstream_cx_total|upstream_rq_total|overflow|upstream_rq_2xx")


class StatsPoller(threading.Thread):
    """Samples the cluster's stats every 100 ms: (monotonic time, stats)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples = []
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            try:
                self.samples.append((time.monotonic(), stats()))
            except Exception:  # noqa: BLE001 - a missed sample is fine
                pass
            self.stop_flag.wait(0.1)

    def first_time(self, after, pred):
        for t, s in self.samples:
            if t >= after and pred(s):
                return t
        return None

    def last_change(self, after, key):
        """When `key` last increased after `after` (the sample that first showed the final value)."""
        last = None
        prev = None
        for t, s in self.samples:
            v = s.get(key)
            if t >= after and prev is not None and v is not None and v != prev:
                last = t
            prev = v
        return last


# === the client ===

class Load:
    """Keep-alive HTTP/1.1 clients, each sending a request every `period` seconds (or as fast
    as the answers come back, if slower); every non-200 answer, reset, or timeout is an error."""

    def __init__(self, connections, rate_per_conn):
        self.connections = connections
        self.period = 1.0 / rate_per_conn
        self.sent = 0
        self.ok = 0
        self.errors = []  # (monotonic time, description)
        self.latencies = []  # (start monotonic time, seconds) of each answered request
        self.running = True

    async def one(self, i):
        reader = writer = None
        next_at = time.monotonic()
        while self.running:
            now = time.monotonic()
            if next_at > now:
                await asyncio.sleep(next_at - now)
            next_at = max(time.monotonic(), next_at + self.period)
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", LISTEN_PORT), 5)
                self.sent += 1
                t0 = time.monotonic()
                writer.write(b"GET /work HTTP/1.1\r\nHost: app\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                status = int(head.split(b" ", 2)[1])
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                body = await asyncio.wait_for(reader.readexactly(int(m.group(1))), 10) if m else b""
                self.latencies.append((t0, time.monotonic() - t0))
                if status == 200:
                    self.ok += 1
                else:
                    self.errors.append((t0, f"{status} {body[:80].decode(errors='replace')!r}"))
                if re.search(rb"(?i)\r\nconnection:\s*close", head):
                    writer.close()
                    reader = writer = None
            except Exception as e:  # noqa: BLE001 - every failure is a client-visible error
                self.errors.append((time.monotonic(), f"{type(e).__name__}: {e}"))
                if writer is not None:
                    writer.close()
                reader = writer = None

    async def run_until(self, done):
        tasks = [asyncio.create_task(self.one(i)) for i in range(self.connections)]
        await done
        self.running = False
        await asyncio.gather(*tasks)


# === cases ===

class Case:
    def __init__(self, args, name):
        self.args, self.name = args, name
        self.run_dir = args.run_dir
        self.hosts = []
        self.legate = None
        self.poller = None

    def __enter__(self):
        self.hosts = [Host(i, port) for i, port in enumerate(HOST_PORTS)]
        log = open(os.path.join(self.run_dir, f"legate-{self.name}.log"), "wb")
        self.legate = subprocess.Popen([self.args.legate, "-c", os.path.join(self.run_dir, "failover.yaml"),
                                        "--concurrency", str(self.args.concurrency), "-l", "warning"],
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                s = stats()
                if s.get("membership_healthy") == 3 and s.get("health_check.healthy", 3) == 3:
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if time.monotonic() > deadline or self.legate.poll() is not None:
                raise RuntimeError(f"legate never reported 3 healthy hosts (see legate-{self.name}.log)")
            time.sleep(0.1)
        self.poller = StatsPoller()
        self.poller.start()
        return self

    def __exit__(self, *exc):
        if self.poller:
            self.poller.stop_flag.set()
            self.poller.join()
        if self.legate and self.legate.poll() is None:
            self.legate.terminate()
            try:
                self.legate.wait(10)
            except subprocess.TimeoutExpired:
                self.legate.kill()
                self.legate.wait()
        for h in self.hosts:
            h.stop()

    def run(self, scenario):
        load = Load(self.args.connections, self.args.rate)

        async def main():
            await load.run_until(asyncio.ensure_future(scenario(self)))

        before = stats()
        t_start = time.monotonic()
        asyncio.run(main())
        after = stats()
        return load, before, after, t_start


def diff(before, after):
    out = {}
    for k, v in sorted(after.items()):
        if not INTERESTING.search(k):
            continue
        b = before.get(k, 0)
        if k.startswith("membership") or k.endswith("_active") or k == "health_check.healthy":
            out[k] = f"{b} → {v}"
        elif v != b:
            out[k] = v - b
    return out


def report_common(c, load, before, after, t_start, t_fault):
    bad = c.hosts[0]
    errs_after = [e for e in load.errors if e[0] >= t_fault]
    return {
        "requests_sent": load.sent,
        "ok": load.ok,
        "client_errors": len(load.errors),
        "client_errors_after_fault": len(errs_after),
        "error_samples": [f"+{t - t_fault:.3f}s {d}" for t, d in load.errors[:10]],
        "client_latency_after_fault_ms": latency_summary([d for t, d in load.latencies if t >= t_fault]),
        "slow_requests_after_fault": len([1 for t, d in load.latencies if t >= t_fault and d > 0.1]),
        "bad_host_requests_before_fault": len([t for t in bad.requests() if t < t_fault]),
        "bad_host_requests_after_fault": len(bad.requests(after=t_fault)),
        "good_hosts_requests": [len(h.requests()) for h in c.hosts[1:]],
        "stats_delta": diff(before, after),
    }


def latency_summary(values):
    if not values:
        return {}
    values = sorted(values)
    pick = lambda q: round(values[min(len(values) - 1, int(q * len(values)))] * 1e3, 2)  # noqa: E731
    return {"p50": pick(0.5), "p99": pick(0.99), "p99.9": pick(0.999), "max": round(values[-1] * 1e3, 2)}


def since(t, t0):
    return None if t is None else round(t - t0, 3)


async def crash(c):
    await asyncio.sleep(c.args.warm)
    c.t_fault = time.monotonic()
    c.hosts[0].kill()
    await asyncio.sleep(c.args.after)


async def blackhole(c):
    await asyncio.sleep(c.args.warm)
    c.t_fault = time.monotonic()
    c.hosts[0].signal(signal.SIGUSR1)
    await asyncio.sleep(c.args.after)


async def overload(c):
    await asyncio.sleep(c.args.warm)
    c.t_fault = time.monotonic()
    c.hosts[0].signal(signal.SIGUSR2)
    await asyncio.sleep(c.args.overload_after)


async def recovery(c):
    await asyncio.sleep(c.args.warm)
    c.hosts[0].kill()
    c.t_crash = time.monotonic()
    # Out of rotation first (outlier ejection, fast), then, for up to 10 s, wait for the
    # health check to mark it unhealthy too (unhealthy_threshold failures): a recovery that
    # the health check can see needs the host to have failed it first.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        s = c.poller.samples[-1][1] if c.poller.samples else {}
        if s.get("membership_healthy") == 2:
            break
        await asyncio.sleep(0.1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        s = c.poller.samples[-1][1] if c.poller.samples else {}
        if s.get("health_check.healthy", 3) < 3:
            c.t_hc_unhealthy = time.monotonic()
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    c.t_fault = time.monotonic()  # here: the moment the host comes back
    await asyncio.get_running_loop().run_in_executor(None, c.hosts[0].start)
    # Back in rotation needs the outlier ejection to end (base_ejection_time 30 s) and/or the
    # health check to pass healthy_threshold times: wait up to 45 s for a first request.
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and not c.hosts[0].requests(after=c.t_fault):
        await asyncio.sleep(0.1)
    await asyncio.sleep(2.0)


def run_case(args, name):
    scenario = {"crash": crash, "blackhole": blackhole, "overload": overload, "recovery": recovery}[name]
    with Case(args, name) as c:
        load, before, after, t_start = c.run(scenario)
        t_fault = c.t_fault
        r = report_common(c, load, before, after, t_start, t_fault)
        bad = c.hosts[0]
        p = c.poller
        healthy_drop = p.first_time(t_fault, lambda s: s.get("membership_healthy", 3) < 3)
        r["fault_at_s"] = round(t_fault - t_start, 3)
        if name in ("crash", "blackhole"):
            last = bad.requests(after=t_fault)
            r["last_request_to_bad_host_after_fault_s"] = since(max(last), t_fault) if last else None
            r["last_connect_fail_after_fault_s"] = since(p.last_change(t_fault, "upstream_cx_connect_fail"), t_fault)
            r["membership_healthy_below_3_after_s"] = since(healthy_drop, t_fault)
            r["ejection_after_s"] = since(p.first_time(t_fault, lambda s: s.get("outlier_detection.ejections_active", 0) > 0), t_fault)
        if name == "overload":
            reqs = bad.requests(after=t_fault)
            # ejected = the first gap of more than 2 s in its traffic; back = the request ending that gap
            gap_start = gap_end = None
            prev = t_fault
            for t in reqs:
                if t - prev > 2.0:
                    gap_start, gap_end = prev, t
                    break
                prev = t
            if gap_start is None and reqs and time.monotonic() - reqs[-1] > 2.0:
                gap_start = reqs[-1]
            r["last_request_before_ejection_s"] = since(gap_start, t_fault)
            r["traffic_returns_after_s"] = since(gap_end, t_fault)
            r["bad_host_503s"] = len([1 for t, k in bad.events if k == "503"])
            r["ejection_after_s"] = since(p.first_time(t_fault, lambda s: s.get("outlier_detection.ejections_active", 0) > 0), t_fault)
            # Un-ejected: the first sample after the ejection with no active ejection or 3
            # healthy hosts (a re-ejection can follow within one 100 ms sample).
            r["unejection_after_s"] = since(p.first_time(
                t_fault + (r["ejection_after_s"] or 0) + 0.2,
                lambda s: s.get("outlier_detection.ejections_active", 0) == 0 or s.get("membership_healthy") == 3),
                t_fault)
        if name == "recovery":
            first = bad.requests(after=t_fault)
            first_hc = [t for t, k in bad.events if k.startswith("hc") and t >= t_fault]
            r["crash_to_membership_healthy_2_s"] = since(p.first_time(c.t_crash, lambda s: s.get("membership_healthy", 3) < 3), c.t_crash)
            r["crash_to_health_check_unhealthy_s"] = since(getattr(c, "t_hc_unhealthy", None), c.t_crash)
            r["back_to_first_health_check_s"] = since(min(first_hc) if first_hc else None, t_fault)
            r["back_to_first_request_s"] = since(min(first) if first else None, t_fault)
            r["membership_healthy_3_after_s"] = since(p.first_time(t_fault, lambda s: s.get("membership_healthy") == 3), t_fault)
        try:
            r["clusters_health_flags"] = clusters_flags()
        except Exception as e:  # noqa: BLE001
            r["clusters_health_flags"] = [f"unavailable: {e}"]
    return r


def markdown(results, meta):
    lines = [f"# legate failover benchmark {meta['date']} on {meta['host']}", "",
             f"- legate {meta['legate']} --concurrency {meta['concurrency']}, examples/fast-failover.yaml "
             f"(ports replaced); {meta['connections']} keep-alive client connections at up to "
             f"{meta['rate']} req/s each; fault at +{meta['warm']} s; health check no_traffic_interval: "
             f"{meta['no_traffic_interval'] or 'as in the recipe (unset: 60 s)'}; circuit_breakers max_retries: "
             f"{meta['max_retries'] or 'as in the recipe (unset: 3)'}.",
             "- times are from the fault (for recovery: from the host's restart), in seconds; "
             "`–` = did not happen during the case.", "",
             "| case | requests | client errors | client latency after fault p99 / max ms | "
             "bad host: requests after fault | bad host last / first request | out of rotation (stat) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | harness error: {r['error']} | | | | | |")
            continue
        if name in ("crash", "blackhole"):
            when = f"last at {fmt(r['last_request_to_bad_host_after_fault_s'])}"
            out = (f"membership_healthy<3 at {fmt(r['membership_healthy_below_3_after_s'])}; ejected at "
                   f"{fmt(r['ejection_after_s'])}; last connect_fail at {fmt(r['last_connect_fail_after_fault_s'])}")
        elif name == "overload":
            when = (f"last before ejection {fmt(r['last_request_before_ejection_s'])}; traffic back at "
                    f"{fmt(r['traffic_returns_after_s'])}")
            out = f"ejected at {fmt(r['ejection_after_s'])}; un-ejected at {fmt(r['unejection_after_s'])}"
        else:
            when = (f"first health check {fmt(r['back_to_first_health_check_s'])}; first request "
                    f"{fmt(r['back_to_first_request_s'])}")
            out = (f"before: ejected {fmt(r['crash_to_membership_healthy_2_s'])} and health-check unhealthy "
                   f"{fmt(r['crash_to_health_check_unhealthy_s'])} after the crash; back: membership_healthy=3 at "
                   f"{fmt(r['membership_healthy_3_after_s'])}")
        lat = r["client_latency_after_fault_ms"]
        lines.append(f"| {name} | {r['requests_sent']} | {r['client_errors']} | {lat.get('p99')} / {lat.get('max')} | "
                     f"{r['bad_host_requests_after_fault']} | {when} | {out} |")
    lines.append("")
    for name, r in results.items():
        if "error" in r:
            continue
        lines.append(f"## {name}")
        lines.append("")
        if r["error_samples"]:
            lines.append("client-visible errors (first 10): " + "; ".join(r["error_samples"]))
            lines.append("")
        lines.append("stats (cluster.app.*, change during the case): " +
                     ", ".join(f"`{k}` {v}" for k, v in r["stats_delta"].items()))
        lines.append("")
        lines.append("/clusters at the end: " + ", ".join(f"`{f}`" for f in r["clusters_health_flags"]))
        lines.append("")
    return "\n".join(lines)


def fmt(v):
    return "–" if v is None else f"{v:.2f}"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "upstream":
        ap = argparse.ArgumentParser()
        ap.add_argument("upstream")
        ap.add_argument("--port", type=int, required=True)
        upstream_main(ap.parse_args().port)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--legate", required=True)
    ap.add_argument("--src", default=os.path.dirname(HERE), help="checkout whose examples/ to use")
    ap.add_argument("--cases", default="crash,blackhole,overload,recovery")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second per connection")
    ap.add_argument("--concurrency", type=int, default=1, help="legate workers")
    ap.add_argument("--warm", type=float, default=3.0, help="seconds of load before the fault")
    ap.add_argument("--after", type=float, default=12.0, help="seconds of load after the fault")
    ap.add_argument("--overload-after", type=float, default=45.0,
                    help="seconds after the overload fault (covers base_ejection_time 30 s)")
    ap.add_argument("--no-traffic-interval", help="add health_checks[0].no_traffic_interval (e.g. 2s) to the "
                    "recipe; by default the recipe runs unchanged")
    ap.add_argument("--max-retries", type=int, help="add circuit_breakers max_retries to the recipe's cluster "
                    "(by default the recipe runs unchanged: Envoy's default, 3)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    args.run_dir = os.path.join("/tmp", f"legate-failover-{os.getpid()}")
    os.makedirs(args.run_dir, exist_ok=True)
    failover_config(args.src, os.path.join(args.run_dir, "failover.yaml"), args.no_traffic_interval, args.max_retries)
    git = subprocess.run(["git", "-C", args.src, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": socket.gethostname(), "legate": git.stdout.strip(), "concurrency": args.concurrency,
            "connections": args.connections, "rate": args.rate, "warm": args.warm,
            "no_traffic_interval": args.no_traffic_interval, "max_retries": args.max_retries,
            "config": open(os.path.join(args.run_dir, "failover.yaml")).read()}
    results = {}
    for name in args.cases.split(","):
        try:
            results[name] = run_case(args, name)
        except Exception as e:  # noqa: BLE001 - recorded, next case runs
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"[{name}] {json.dumps(results[name], default=str)}", flush=True)
    md = markdown(results, meta)
    print()
    print(md)
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M")
    variant = f"-ntI{args.no_traffic_interval}" if args.no_traffic_interval else ""
    variant += f"-c{args.concurrency}" if args.concurrency != 1 else ""
    variant += f"-maxretries{args.max_retries}" if args.max_retries else ""
    base = os.path.join(args.out, f"{stamp}-{meta['host']}-failover{variant}")
    # Named by the minute: a second run in the same minute gets -2, -3…
    taken, n = base, 2
    while os.path.exists(base + ".md"):
        base, n = f"{taken}-{n}", n + 1
    with open(base + ".md", "w") as f:
        f.write(md + "\n")
    with open(base + ".json", "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1, default=str)
    print(f"\nwrote {base}.md and {base}.json (legate logs in {args.run_dir})")


if __name__ == "__main__":
    main()
