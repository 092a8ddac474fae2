#!/usr/bin/env python3
"""legate's side-by-side benchmark against nginx and HAProxy (issue 6).

Starts one shared backend (nginx, one worker) and, one proxy at a time, legate
(--concurrency 1), nginx (one worker) and HAProxy (nbthread 1), each configured from
bench/configs/. Each case is repeated in interleaved order (legate nginx haproxy, legate
nginx haproxy, ...), each run on a freshly started proxy. Backend and proxy are pinned to
CPU 0, the load generator (and this script) to CPU 1.

Run through bench/run.sh, which installs the tools and builds legate; see bench/README.md.
Standard library only.
"""

import argparse
import asyncio
import datetime
import glob
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

PORTS = {
    "BACKEND_PORT": 20080,
    "TCP_BACKEND_PORT": 20081,
    "HTTP_PORT": 21080,
    "H2C_PORT": 21081,
    "TCP_PORT": 21082,
    "TLS_PORT": 21443,
    "TLS_RSA_PORT": 21444,
    "ADMIN_PORT": 21090,
}
SERVER_CPU = "0"
CLIENT_CPU = "1"
BODY100 = "x" * 99 + "\\n"  # nginx string escape: 99 'x' + newline = 100 bytes
PROXIES = ["legate", "nginx", "haproxy"]
# Builds of legate in the table: the ratio columns compare each with each peer.
LEGATE_BUILDS = ("legate", "legate-pgo")
# Requests of the short run whose system calls are counted (cases 1 and 2).
SYSCALL_REQUESTS = 20000
# Cases a proxy is not configured for (the minimal Pingora peer has no TCP proxy and no TLS).
NOT_CONFIGURED = {"pingora": {"tcp", "tls"}}


# === processes ===

class Proc:
    """A server process we started, pinned to SERVER_CPU; `pids()` includes its children
    (nginx's worker)."""

    def __init__(self, name, argv, run_dir, env=None):
        self.name = name
        self.log_path = os.path.join(run_dir, f"{name}.log")
        self.log = open(self.log_path, "ab")
        self.p = subprocess.Popen(["taskset", "-c", SERVER_CPU] + argv, stdout=self.log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def pids(self):
        out = [self.p.pid]
        try:
            with open(f"/proc/{self.p.pid}/task/{self.p.pid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
        return out

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def cpu_seconds(pids):
    """(user, system) CPU seconds of these processes, all their threads included
    (/proc/<pid>/stat fields 14 and 15 count every thread, exited ones too)."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def context_switches(pids):
    """(voluntary, involuntary) context switches of every thread of these processes
    (/proc/<pid>/task/<tid>/status): a proxy's involuntary ones on case 1 are, in the
    main, the backend preempting it on their shared CPU."""
    voluntary = involuntary = 0
    for pid in pids:
        for status in glob.glob(f"/proc/{pid}/task/*/status"):
            try:
                with open(status) as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            voluntary += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches:"):
                            involuntary += int(line.split()[1])
            except OSError:
                pass
    return voluntary, involuntary


def tcp_segments():
    """TCP segments sent on this machine so far (/proc/net/snmp `Tcp: OutSegs`): all of a
    case's loopback traffic, client's and backend's included. Those two are the same whichever
    proxy runs, so a difference between proxies is the proxy's own: a pure ACK or a write split
    in two costs a trip through the kernel's TCP stack that no system-call count shows."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    names, values = rows[0], rows[1]
    return int(values[names.index("OutSegs")])


def rss_kib(pids, field="VmRSS"):
    """Resident KiB of `pids` from /proc/<pid>/status: `VmRSS`, or its parts `RssAnon`
    (heap, stacks) and `RssFile` (the binary's code and data, shared libraries)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def wait_port(port, timeout=15.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early, see {proc.log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def make_certificates(run_dir):
    """The one certificate of each kind that all the proxies serve (self-signed, CN
    bench.local): `<kind>-cert.pem`, `<kind>-key.pem` and, for HAProxy, both in `<kind>.pem`."""
    for kind, key in (("ecdsa", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                      ("rsa", ["-newkey", "rsa:2048"])):
        cert, pkey = (os.path.join(run_dir, f"{kind}-{part}.pem") for part in ("cert", "key"))
        r = subprocess.run(["openssl", "req", "-x509"] + key + ["-nodes", "-days", "30", "-subj", "/CN=bench.local",
                            "-keyout", pkey, "-out", cert], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"openssl req ({kind}): {r.stderr.strip()[:300]}")
        with open(os.path.join(run_dir, f"{kind}.pem"), "w") as out:
            for part in (cert, pkey):
                with open(part) as f:
                    out.write(f.read())


def negotiated(port):
    """What a TLS client (OpenSSL's, as wrk's) negotiates with the server on `port`: protocol,
    cipher suite and key exchange, so that the table compares like with like."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief"],
                       input="", capture_output=True, text=True, timeout=10)
    text = r.stdout + r.stderr
    found = {}
    for key, label in (("protocol", "Protocol version"), ("cipher", "Ciphersuite"),
                       ("key_exchange", "Server Temp Key"), ("signature", "Signature type")):
        m = re.search(rf"^{re.escape(label)}: (.+)$", text, re.M)
        if m:
            found[key] = m.group(1).strip()
    return found


def http_get(port, path="/", timeout=2.0):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read()


def ensure_free(ports):
    """Refuses to measure when a port of the benchmark already answers: a process left over
    from another run would serve in place of the benchmark's own backend (nginx's failed bind
    goes unnoticed when the old one answers first) or share a proxy's SO_REUSEPORT listener."""
    for port in ports:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except OSError:
            continue
        raise RuntimeError(f"127.0.0.1:{port} is already in use: stop what listens there (`ss -ltnp`), "
                           "or it would answer in place of the benchmark's own processes")


def wait_http(port, path="/", timeout=15.0, proc=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early, see {proc.log_path}")
        try:
            status, _ = http_get(port, path)
            if status == 200:
                return
            last = status
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"GET 127.0.0.1:{port}{path} never answered 200 (last: {last})")


def render(template, out_path, run_dir):
    with open(os.path.join(HERE, "configs", template)) as f:
        text = f.read()
    values = dict(PORTS, RUN=run_dir, BODY100=BODY100)
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", str(value))
    if "{{" in text:
        raise RuntimeError(f"{template}: unfilled placeholder {re.search(r'{{[A-Z0-9_]+}}', text)}")
    with open(out_path, "w") as f:
        f.write(text)
    return out_path


def client(argv):
    """A load generator command pinned to CLIENT_CPU; returns its stdout."""
    r = subprocess.run(["taskset", "-c", CLIENT_CPU] + argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({r.returncode}): {r.stderr.strip()[:500]}")
    return r.stdout


# === the proxies ===

def strace_counts(p, run_dir, name, load):
    """System calls of the proxy's processes while `load()` runs; returns (units of work done
    as `load` reports them, {syscall: (calls, errors)})."""
    out_path = os.path.join(run_dir, f"strace-{name}.txt")
    argv = ["strace", "-c", "-f", "-o", out_path]
    for pid in p.pids():
        argv += ["-p", str(pid)]
    tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attach
    done = load()
    time.sleep(0.2)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    calls = {}
    with open(out_path) as f:
        for line in f:
            parts = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(parts) >= 5 and re.match(r"^[\d.]+$", parts[0]) and parts[-1] != "total":
                calls[parts[-1]] = (int(parts[3]), int(parts[4]) if len(parts) == 6 else 0)
    return done, calls


def h2load_load(h2load_args, port):
    """A load for `syscalls_once`: `SYSCALL_REQUESTS` requests from h2load, the ones that
    succeeded returned."""
    return lambda: parse_h2load(client(["h2load", "-t1", *h2load_args, "-n", str(SYSCALL_REQUESTS),
                                        f"http://127.0.0.1:{port}/"]))["succeeded"]


class Bench:
    def __init__(self, args):
        self.args = args
        self.run_dir = tempfile.mkdtemp(prefix="legate-bench-")
        # nginx's workers drop root privileges (to nobody): they must read and write here.
        os.chmod(self.run_dir, 0o755)
        for d in ("backend-tmp", "nginx-tmp"):
            os.makedirs(os.path.join(self.run_dir, d))
            os.chmod(os.path.join(self.run_dir, d), 0o777)
        with open(os.path.join(self.run_dir, "1m.bin"), "wb") as f:
            f.write(os.urandom(1 << 20))
        os.chmod(os.path.join(self.run_dir, "1m.bin"), 0o644)
        make_certificates(self.run_dir)
        self.configs = {
            "backend": render("backend-nginx.conf", os.path.join(self.run_dir, "backend.conf"), self.run_dir),
            "nginx": render("nginx-proxy.conf", os.path.join(self.run_dir, "nginx-proxy.conf"), self.run_dir),
            "haproxy": render("haproxy.cfg", os.path.join(self.run_dir, "haproxy.cfg"), self.run_dir),
            "legate": render(getattr(args, "legate_config", None) or "legate.yaml",
                             os.path.join(self.run_dir, "legate.yaml"), self.run_dir),
        }
        self.backend = None
        self.syscalls_counted = set()
        self.tcp_backend = None

    def argv(self, proxy, config=None):
        if proxy in LEGATE_BUILDS:
            binary = self.args.legate_pgo if proxy == "legate-pgo" else self.args.legate
            return [binary, "-c", config or self.configs["legate"], "--concurrency", "1",
                    "-l", "warning"]
        if proxy == "nginx":
            return ["nginx", "-e", os.path.join(self.run_dir, "nginx-proxy-error.log"),
                    "-c", self.configs["nginx"]]
        if proxy == "haproxy":
            return ["haproxy", "-db", "-f", self.configs["haproxy"]]
        if proxy == "pingora":
            return [self.args.pingora, "-c", os.path.join(HERE, "peers", "pingora", "conf.yaml")]
        raise ValueError(proxy)

    def start_backends(self):
        ensure_free(PORTS.values())
        self.backend = Proc("backend", ["nginx", "-e", os.path.join(self.run_dir, "backend-error.log"),
                                        "-c", self.configs["backend"]], self.run_dir)
        wait_http(PORTS["BACKEND_PORT"], proc=self.backend)
        status, body = http_get(PORTS["BACKEND_PORT"])
        assert len(body) == 100, f"backend body is {len(body)} bytes"
        self.tcp_backend = Proc("iperf3", ["iperf3", "-s", "-p", str(PORTS["TCP_BACKEND_PORT"])], self.run_dir)
        wait_port(PORTS["TCP_BACKEND_PORT"], proc=self.tcp_backend)

    def stop_backends(self):
        for p in (self.backend, self.tcp_backend):
            if p is not None:
                p.stop()

    def start(self, proxy):
        p = Proc(proxy, self.argv(proxy), self.run_dir)
        wait_http(PORTS["HTTP_PORT"], proc=p)
        if "tcp" not in NOT_CONFIGURED.get(proxy, ()):
            wait_port(PORTS["TCP_PORT"], proc=p)
        if "tls" not in NOT_CONFIGURED.get(proxy, ()):
            wait_port(PORTS["TLS_PORT"], proc=p)
            wait_port(PORTS["TLS_RSA_PORT"], proc=p)
        return p

    # === cases: each returns a dict of figures for one run on a fresh proxy ===

    def measured(self, p, fn):
        pids = p.pids()
        u0, s0 = cpu_seconds(pids)
        v0, i0 = context_switches(pids)
        g0 = tcp_segments()
        # The backend shares the proxy's CPU: a proxy could look cheaper by leaving work to it
        # (its wake-ups, say), so its CPU is measured beside the proxy's.
        backend = self.backend.pids() if self.backend else []
        bu0, bs0 = cpu_seconds(backend)
        t0 = time.monotonic()
        out = fn()
        elapsed = time.monotonic() - t0
        u1, s1 = cpu_seconds(pids)
        v1, i1 = context_switches(pids)
        g1 = tcp_segments()
        bu1, bs1 = cpu_seconds(backend)
        out.update(cpu_user_s=u1 - u0, cpu_sys_s=s1 - s0, wall_s=elapsed, rss_kib_after=rss_kib(pids),
                   voluntary_switches=v1 - v0, involuntary_switches=i1 - i0,
                   tcp_segments=g1 - g0, backend_cpu_s=bu1 + bs1 - bu0 - bs0, backend_user_s=bu1 - bu0)
        return out

    @staticmethod
    def per_request(r, n):
        """CPU µs and context switches per request of a measured run of `n` requests."""
        r["cpu_us_per_req"] = (r["cpu_user_s"] + r["cpu_sys_s"]) * 1e6 / n
        r["cpu_user_us_per_req"] = r["cpu_user_s"] * 1e6 / n
        r["cpu_sys_us_per_req"] = r["cpu_sys_s"] * 1e6 / n
        r["switches_per_req"] = (r["voluntary_switches"] + r["involuntary_switches"]) / n
        r["involuntary_switches_per_req"] = r["involuntary_switches"] / n
        r["tcp_segments_per_req"] = r["tcp_segments"] / n
        if "backend_cpu_s" in r:
            r["backend_cpu_us_per_req"] = r["backend_cpu_s"] * 1e6 / n
            r["with_backend_cpu_us_per_req"] = r["cpu_us_per_req"] + r["backend_cpu_us_per_req"]
        if "backend_user_s" in r:
            r["backend_user_us_per_req"] = r["backend_user_s"] * 1e6 / n

    def warm_up(self, url):
        client(["wrk", "-t1", "-c64", "-d1s", url])

    def small_requests(self, p, url):
        """Case 1's load on `url` (wrk -t1 -c64 --latency after a warm-up), with the proxy's
        CPU per request."""
        self.warm_up(url)
        r = self.measured(p, lambda: parse_wrk(client(
            ["wrk", "-t1", "-c64", f"-d{self.args.duration}s", "--latency", url])))
        r["req_per_s"] = r["wrk_req_per_s"]
        self.per_request(r, r["requests"])
        return r

    def case_http1(self, p):
        r = self.small_requests(p, f"http://127.0.0.1:{PORTS['HTTP_PORT']}/")
        r.update(self.syscalls_once(p, "http1", h2load_load(["--h1", "-c64"], PORTS["HTTP_PORT"])))
        return r

    def case_close(self, p):
        """Case 1b: one request per connection (the client sends `connection: close`): what
        accepting, setting up and closing a connection costs on top of a request."""
        url = f"http://127.0.0.1:{PORTS['HTTP_PORT']}/"
        wrk = ["wrk", "-t1", "-c16", "-H", "Connection: close"]
        client(wrk + ["-d1s", url])
        r = self.measured(p, lambda: parse_wrk(client(wrk + [f"-d{self.args.duration}s", "--latency", url])))
        r["req_per_s"] = r["wrk_req_per_s"]
        self.per_request(r, r["requests"])
        # h2load cannot open a connection per request: the count runs under wrk, for 2 s.
        r.update(self.syscalls_once(p, "close", lambda: parse_wrk(client(wrk + ["-d2s", url]))["requests"]))
        return r

    def syscalls_once(self, p, case, load):
        """System calls per request of the proxy, counted once per case and proxy (the first
        repetition), by `strace -c -f` over a short run of `load` (it returns the requests
        done) after the measured one: the tracer slows the proxy several times over, so it
        never runs during a measured run."""
        if shutil.which("strace") is None or (case, p.name) in self.syscalls_counted:
            return {}
        self.syscalls_counted.add((case, p.name))
        # A tracer that cannot attach (no ptrace here), or a load run that did not finish,
        # costs this count, not the measured run.
        try:
            done, calls = strace_counts(p, self.run_dir, f"{p.name}-{case}", load)
        except (OSError, subprocess.SubprocessError, AttributeError) as e:
            return {"syscalls_error": str(e)}
        if not done or not calls:
            return {"syscalls_error": "strace counted nothing"}
        per = {name: c / done for name, (c, _) in calls.items()}
        return {"syscalls_per_req": sum(per.values()),
                "syscalls_top": {k: round(v, 2) for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:4]}}

    def case_h2c(self, p):
        url = f"http://127.0.0.1:{PORTS['H2C_PORT']}/"
        client(["h2load", "-t1", "-c32", "-m2", "-D1", url])
        # h2load prints no percentiles; its per-request log has each response's time.
        log = os.path.join(self.run_dir, "h2load-requests.tsv")
        try:
            r = self.measured(p, lambda: parse_h2load(client(
                ["h2load", "-t1", "-c32", "-m2", f"-D{self.args.duration}", f"--log-file={log}", url])))
            r.update(h2load_latencies(log))
        finally:
            if os.path.exists(log):
                os.remove(log)
        r["req_per_s"] = r["h2load_req_per_s"]
        self.per_request(r, r["succeeded"])
        r.update(self.syscalls_once(p, "h2c", h2load_load(["-c32", "-m2"], PORTS["H2C_PORT"])))
        return r

    def case_1mib(self, p):
        return self.mib_responses(p, f"http://127.0.0.1:{PORTS['HTTP_PORT']}/1m")

    def mib_responses(self, p, url):
        """Case 3's load on `url` (wrk -t1 -c8 on a 1 MiB body), with the proxy's CPU per MiB."""
        client(["wrk", "-t1", "-c8", "-d1s", url])
        r = self.measured(p, lambda: parse_wrk(client(
            ["wrk", "-t1", "-c8", f"-d{self.args.duration}s", "--latency", url])))
        mib = r["requests"]  # one MiB body each; headers are ignored
        r["mib_per_s"] = mib / r["wrk_duration_s"]
        r["cpu_us_per_mib"] = (r["cpu_user_s"] + r["cpu_sys_s"]) * 1e6 / mib
        r["cpu_user_us_per_mib"] = r["cpu_user_s"] * 1e6 / mib
        r["cpu_sys_us_per_mib"] = r["cpu_sys_s"] * 1e6 / mib
        return r

    def case_tcp(self, p):
        def run():
            r = subprocess.run(["taskset", "-c", CLIENT_CPU, "iperf3", "-c", "127.0.0.1", "-p",
                                str(PORTS["TCP_PORT"]), "-t", str(self.args.duration), "-J"],
                               capture_output=True, text=True)
            out = json.loads(r.stdout)
            if "error" in out:
                raise RuntimeError(f"iperf3: {out['error']}")
            end = out["end"]
            return {"bytes": end["sum_received"]["bytes"], "seconds": end["sum_received"]["seconds"]}
        # iperf3 -s serves one test at a time and may still be closing the previous one
        # ("the server is busy running a test"): wait for it, retry before measuring.
        for attempt in range(5):
            try:
                json.loads(client(["iperf3", "-c", "127.0.0.1", "-p", str(PORTS["TCP_PORT"]), "-t", "1", "-J"]))
                break
            except (RuntimeError, ValueError):
                time.sleep(1.0)
        r = self.measured(p, run)
        gib = r["bytes"] / (1 << 30)
        r["gib_per_s"] = gib / r["seconds"]
        r["cpu_ms_per_gib"] = (r["cpu_user_s"] + r["cpu_sys_s"]) * 1e3 / gib
        r["cpu_user_ms_per_gib"] = r["cpu_user_s"] * 1e3 / gib
        r["cpu_sys_ms_per_gib"] = r["cpu_sys_s"] * 1e3 / gib
        return r

    def case_tls(self, p):
        """Full TLS handshakes (every request on a new connection: `connection: close`, and
        session resumption is off in all the servers) with an ECDSA P-256 and an RSA 2048
        certificate, then small requests and 1 MiB responses over kept-alive TLS connections
        (ECDSA)."""
        r = {"negotiated": negotiated(PORTS["TLS_PORT"]), "negotiated_rsa": negotiated(PORTS["TLS_RSA_PORT"])}
        totals = {"requests": 0, "non_2xx": 0, "socket_errors": 0}

        def handshakes(port, prefix):
            url = f"https://127.0.0.1:{port}/"
            close = ["-H", "Connection: close"]
            client(["wrk", "-t1", "-c16", "-d1s"] + close + [url])
            m = self.measured(p, lambda: parse_wrk(client(
                ["wrk", "-t1", "-c16", f"-d{self.args.duration}s"] + close + [url])))
            n = m["requests"]
            r[prefix + "hs_per_s"] = m["wrk_req_per_s"]
            r[prefix + "cpu_us_per_hs"] = (m["cpu_user_s"] + m["cpu_sys_s"]) * 1e6 / n
            r[prefix + "cpu_user_us_per_hs"] = m["cpu_user_s"] * 1e6 / n
            for k in totals:
                totals[k] += m[k]
            r[prefix + "raw"] = m["raw"]

        handshakes(PORTS["TLS_PORT"], "")
        handshakes(PORTS["TLS_RSA_PORT"], "rsa_")
        m = self.small_requests(p, f"https://127.0.0.1:{PORTS['TLS_PORT']}/")
        for key in ("req_per_s", "p99_ms", "cpu_us_per_req", "cpu_user_us_per_req", "raw"):
            r["https_" + key] = m.get(key)
        for k in totals:
            totals[k] += m[k]
        m = self.mib_responses(p, f"https://127.0.0.1:{PORTS['TLS_PORT']}/1m")
        r.update(https_mib_per_s=m["mib_per_s"], https_cpu_us_per_mib=m["cpu_us_per_mib"], https_1mib_raw=m["raw"])
        for k in totals:
            totals[k] += m[k]
        r.update(totals)
        return r

    def case_idle(self, p):
        """RSS with N idle keep-alive downstream connections (each sent one request and read
        the response) minus RSS before, per connection. Before = after 64 requests and 64
        idle connections opened and closed the same way: the code that idle connections run
        is then resident, and its pages (a one-time cost, ~1 MiB for a BOLT-laid-out legate,
        whose cold code is not faulted in with the hot) are not counted per connection."""
        n = self.args.idle_conns
        for _ in range(64):
            http_get(PORTS["HTTP_PORT"])
        asyncio.run(idle_connections(PORTS["HTTP_PORT"], min(n, 64), lambda: 0))
        time.sleep(0.5)
        pids = p.pids()
        before = rss_kib(pids)
        r = asyncio.run(idle_connections(PORTS["HTTP_PORT"], n, lambda: rss_kib(pids)))
        r["rss_before_kib"] = before
        r["kib_per_conn"] = (r["rss_with_kib"] - before) / r["open"]
        if not p.alive():
            raise RuntimeError(f"{p.name} died during the idle-connection test")
        return r


def unused_base(path):
    """`path` (a result's name, without its extension), or `path-2`, `path-3`… when a run
    in the same minute already wrote it: results are named by the minute."""
    base, n = path, 2
    while any(os.path.exists(base + ext) for ext in (".md", ".json")):
        base, n = f"{path}-{n}", n + 1
    return base


def parse_wrk(out):
    r = {"raw": out}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", out)
    n, dur, dunit, size, sunit = m.groups()
    r["requests"] = int(n)
    r["wrk_duration_s"] = float(dur) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[dunit]
    r["bytes_read"] = float(size) * {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}[sunit]
    r["wrk_req_per_s"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            r[f"p{pct}_ms"] = float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return r


def parse_h2load(out):
    r = {"raw": out}
    r["h2load_req_per_s"] = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    total, started, done, ok, failed, errored = map(int, m.groups())
    r.update(requests=done, succeeded=ok, failed=failed, errored=errored)
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    r["non_2xx"] = sum(int(x) for x in m.groups()[1:]) if m else 0
    m = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    if m:
        r["mean_ms"] = float(m.group(5)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(6)]
    return r


def h2load_latencies(log):
    """p50 and p99 in ms from h2load's `--log-file` (start µs, status, µs to the response's
    end: one row per request)."""
    times = []
    with open(log) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 3 and cols[2].strip().isdigit():
                times.append(int(cols[2]))
    if not times:
        return {}
    times.sort()

    def at(q):
        return times[min(len(times) - 1, int(q * len(times)))] / 1000

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "logged_requests": len(times)}


async def idle_connections(port, n, measure):
    """Open n keep-alive connections, send one request on each, read the whole response and
    keep the connection open; then measure; then close them all with RST (SO_LINGER 0, so
    that repeated runs do not fill the port range with TIME_WAIT)."""
    conns = []
    failures = 0
    sem = asyncio.Semaphore(32)
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"

    async def one():
        nonlocal failures
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                await asyncio.wait_for(reader.readexactly(int(m.group(1))), 10)
                conns.append(writer)
            except Exception:  # noqa: BLE001 - counted, reported
                failures += 1

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    open_s = time.monotonic() - t0
    await asyncio.sleep(1.0)
    # Still open? A proxy that closed idle connections would make the figure meaningless.
    rss = measure()
    for w in conns:
        sock = w.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        w.close()
    await asyncio.sleep(0.2)
    return {"open": len(conns), "failed": failures, "open_s": open_s, "rss_with_kib": rss}


# === config scale (legate only) ===

def scale_configs(run_dir):
    """Bootstraps with 10k routes, 1k clusters and 10k clusters (one route per cluster);
    the path that the last route matches, to check that the config serves."""
    port = PORTS["HTTP_PORT"]
    backend = PORTS["BACKEND_PORT"]

    def bootstrap(routes, clusters):
        lines = [
            "admin:",
            f"  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {PORTS['ADMIN_PORT']} }} }}",
            "static_resources:",
            "  listeners:",
            "  - name: http",
            f"    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}",
            "    filter_chains:",
            "    - filters:",
            "      - name: envoy.filters.network.http_connection_manager",
            "        typed_config:",
            '          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
            "          stat_prefix: ingress_http",
            "          route_config:",
            "            virtual_hosts:",
            "            - name: all",
            '              domains: ["*"]',
            "              routes:",
        ]
        for prefix, cluster in routes:
            lines.append(f'              - {{ match: {{ prefix: "{prefix}" }}, route: {{ cluster: {cluster} }} }}')
        lines += [
            "          http_filters:",
            "          - name: envoy.filters.http.router",
            "            typed_config:",
            '              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
            "  clusters:",
        ]
        for name in clusters:
            lines += [
                f"  - name: {name}",
                "    type: STATIC",
                "    connect_timeout: 1s",
                f"    load_assignment: {{ cluster_name: {name}, endpoints: [{{ lb_endpoints: [{{ endpoint: "
                f"{{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {backend} }} }} }} }}] }}] }}",
            ]
        return "\n".join(lines) + "\n"

    out = {}
    out["baseline_1_route"] = (bootstrap([("/", "c0")], ["c0"]), "/")
    out["routes_10k"] = (bootstrap([(f"/svc{i}/", "c0") for i in range(10000)], ["c0"]), "/svc9999/")
    for n, label in ((1000, "clusters_1k"), (10000, "clusters_10k")):
        out[label] = (bootstrap([(f"/c{i}/", f"c{i}") for i in range(n)], [f"c{i}" for i in range(n)]),
                      f"/c{n - 1}/")
    paths = {}
    for label, (text, path) in out.items():
        file = os.path.join(run_dir, f"scale-{label}.yaml")
        with open(file, "w") as f:
            f.write(text)
        paths[label] = (file, path)
    return paths


def run_scale(bench, reps):
    results = {}
    for label, (file, path) in scale_configs(bench.run_dir).items():
        runs = []
        for _ in range(reps):
            t0 = time.monotonic()
            v = subprocess.run(["taskset", "-c", SERVER_CPU, bench.args.legate, "--mode", "validate",
                                "-c", file, "-l", "warning"], capture_output=True, text=True)
            validate_s = time.monotonic() - t0
            if v.returncode != 0:
                raise RuntimeError(f"validate {label}: {v.stderr[:500]}")
            t0 = time.monotonic()
            p = Proc("legate-" + label, bench.argv("legate", file), bench.run_dir)
            try:
                wait_http(PORTS["HTTP_PORT"], path, timeout=120, proc=p)
                serve_s = time.monotonic() - t0
                time.sleep(0.3)
                rss = rss_kib(p.pids())
            finally:
                p.stop()
            runs.append({"validate_s": validate_s, "validate_output_bytes": len(v.stdout) + len(v.stderr),
                         "time_to_serve_s": serve_s, "rss_kib": rss})
        results[label] = runs
    return results


ROUTE_MATCH_SHAPES = (("prefix_routes", "prefix routes in one virtual host"),
                      ("exact_paths", "exact-path routes in one virtual host"),
                      ("exact_domains", "virtual hosts with one exact domain each"))
ROUTE_MATCH_SIZES = (10, 10000)
TIME_UNIT_NS = {"ps": 0.001, "ns": 1.0, "us": 1e3, "\u00b5s": 1e3, "ms": 1e6, "s": 1e9}


def run_route_match(src, quick):
    """Route-match cost per request (case 6): the criterion benchmark `route_match` at 10 and
    10,000 entries, each matching the entry configured last. Pinned to the proxies' CPU, as
    nothing else runs by then. Returns {shape: {entries: ns per match}} from criterion's
    point estimates."""
    ids = "|".join(str(n) for n in ROUTE_MATCH_SIZES)
    seconds = ["--warm-up-time", "1", "--measurement-time", "1" if quick else "3"]
    cargo = ["cargo", "bench", "--locked", "-q", "-p", "legate-proxy", "--bench", "route_match"]
    # Compiled first on both CPUs (bench/run.sh has usually done it), then measured on one.
    r = subprocess.run(cargo + ["--no-run"], cwd=src, capture_output=True, text=True, timeout=1800)
    if r.returncode == 0:
        argv = ["taskset", "-c", SERVER_CPU, *cargo, "--", "--noplot", *seconds, f"^route_match/[a-z_]+/({ids})$"]
        r = subprocess.run(argv, cwd=src, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"cargo bench route_match: {(r.stderr or r.stdout)[-800:]}")
    found = {}
    # Criterion prints the id, then `time: [low estimate high]`, on one line or two.
    for m in re.finditer(r"route_match/(\w+)/(\d+)\s+time:\s+\[\S+ \S+ ([\d.]+) (\S+) \S+ \S+\]", r.stdout):
        shape, entries, value, unit = m.group(1), int(m.group(2)), float(m.group(3)), m.group(4)
        if unit not in TIME_UNIT_NS:
            raise RuntimeError(f"cargo bench route_match: unknown unit {unit!r}")
        found.setdefault(shape, {})[entries] = value * TIME_UNIT_NS[unit]
    missing = [f"{s}/{n}" for s, _ in ROUTE_MATCH_SHAPES for n in ROUTE_MATCH_SIZES if n not in found.get(s, {})]
    if missing:
        raise RuntimeError(f"cargo bench route_match: no estimate for {', '.join(missing)}:\n{r.stdout[-800:]}")
    return found


# === summary ===

# Cases 1, 1b and 2: the backend shares the proxy's CPU, so its CPU is shown beside the proxy's.
BACKEND_ROWS = [("backend_cpu_us_per_req", "  the backend's CPU µs/req (it shares the proxy's CPU)", "lower"),
                ("backend_user_us_per_req", "    its user µs/req", "lower"),
                ("with_backend_cpu_us_per_req", "  proxy + backend CPU µs/req", "lower")]

CASES = [
    # (case, function, [(metric key, label, better)])
    ("http1", "case_http1", [("req_per_s", "req/s", "higher"), ("p50_ms", "p50 ms", "lower"),
                             ("p99_ms", "p99 ms", "lower"), ("cpu_us_per_req", "CPU µs/req", "lower"),
                             ("cpu_user_us_per_req", "  user µs/req", "lower"),
                             ("cpu_sys_us_per_req", "  sys µs/req", "lower"),
                             *BACKEND_ROWS,
                             ("switches_per_req", "  context switches/req", "lower"),
                             ("involuntary_switches_per_req", "    involuntary", "lower"),
                             ("tcp_segments_per_req", "  TCP segments/req (all)", "lower"),
                             ("syscalls_per_req", "  system calls/req (strace, first round)", "lower")]),
    ("close", "case_close", [("req_per_s", "req/s", "higher"), ("p99_ms", "p99 ms", "lower"),
                             ("cpu_us_per_req", "CPU µs/req", "lower"),
                             ("cpu_user_us_per_req", "  user µs/req", "lower"),
                             ("cpu_sys_us_per_req", "  sys µs/req", "lower"),
                             *BACKEND_ROWS,
                             ("syscalls_per_req", "  system calls/req (strace, first round)", "lower")]),
    ("h2c", "case_h2c", [("req_per_s", "req/s", "higher"), ("mean_ms", "mean ms", "lower"),
                         ("p50_ms", "p50 ms", "lower"), ("p99_ms", "p99 ms", "lower"),
                         ("cpu_us_per_req", "CPU µs/req", "lower"),
                         ("cpu_user_us_per_req", "  user µs/req", "lower"),
                         ("cpu_sys_us_per_req", "  sys µs/req", "lower"),
                         *BACKEND_ROWS,
                         ("switches_per_req", "  context switches/req", "lower"),
                         ("involuntary_switches_per_req", "    involuntary", "lower"),
                         ("tcp_segments_per_req", "  TCP segments/req (all)", "lower"),
                         ("syscalls_per_req", "  system calls/req (strace, first round)", "lower")]),
    ("1mib", "case_1mib", [("mib_per_s", "MiB/s", "higher"), ("cpu_us_per_mib", "CPU µs/MiB", "lower"),
                           ("cpu_user_us_per_mib", "  user µs/MiB", "lower"),
                           ("cpu_sys_us_per_mib", "  sys µs/MiB", "lower")]),
    ("idle", "case_idle", [("kib_per_conn", "KiB/idle conn", "lower")]),
    ("tcp", "case_tcp", [("gib_per_s", "GiB/s", "higher"), ("cpu_ms_per_gib", "CPU ms/GiB", "lower"),
                         ("cpu_user_ms_per_gib", "  user ms/GiB", "lower"),
                         ("cpu_sys_ms_per_gib", "  sys ms/GiB", "lower")]),
    ("tls", "case_tls", [("hs_per_s", "ECDSA P-256 handshakes/s", "higher"),
                         ("cpu_us_per_hs", "  CPU µs/handshake", "lower"),
                         ("rsa_hs_per_s", "RSA 2048 handshakes/s", "higher"),
                         ("rsa_cpu_us_per_hs", "  CPU µs/handshake", "lower"),
                         ("https_req_per_s", "HTTPS keep-alive req/s", "higher"),
                         ("https_p99_ms", "  p99 ms", "lower"),
                         ("https_cpu_us_per_req", "  CPU µs/req", "lower"),
                         ("https_cpu_user_us_per_req", "  user µs/req", "lower"),
                         ("https_mib_per_s", "1 MiB responses over TLS: MiB/s", "higher"),
                         ("https_cpu_us_per_mib", "  CPU µs/MiB", "lower")]),
]
CASE_TITLES = {
    "http1": "1. HTTP/1.1 keep-alive, 100 B (wrk -t1 -c64 --latency)",
    "close": "1b. HTTP/1.1, one request per connection, 100 B (wrk -t1 -c16 `connection: close`)",
    "h2c": "2. h2c downstream → HTTP/1.1 upstream (h2load -t1 -c32 -m2)",
    "1mib": "3. 1 MiB responses (wrk -t1 -c8)",
    "idle": "4. memory per idle keep-alive connection",
    "tcp": "5. tcp_proxy bulk (iperf3, 1 stream)",
    "tls": "7. TLS, same certificates (wrk -t1 -c16 `connection: close`, no resumption; keep-alive -c64; 1 MiB -c8)",
}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def summarize(runs, proxies):
    """Medians per case, metric and proxy."""
    med = {}
    for case, _, metrics in CASES:
        for key, _, _ in metrics:
            for proxy in proxies:
                vals = [r.get(key) for r in runs.get(case, {}).get(proxy, []) if "error" not in r]
                med[(case, key, proxy)] = median(vals)
    return med


# The figures whose targets are ratios to the best peer, read round by round below the table.
PAIRED = [("http1", "cpu_us_per_req", "small requests: CPU µs/req"), ("http1", "req_per_s", "small requests: req/s"),
          ("http1", "p99_ms", "small requests: p99"), ("h2c", "cpu_us_per_req", "h2c: CPU µs/req"),
          ("h2c", "p99_ms", "h2c: p99")]


def paired_rounds(runs, builds, peers):
    """Each round's ratio of a legate build to the best peer of the same round (the proxies
    of a round run back to back, so a round's ratio is spared the machine's drift between
    rounds, which the medians are not): the spread of the targets' ratios within one run."""
    rows, rounds = [], 0
    for case, key, label in PAIRED:
        better = next(b for k, _, b in next(m for c, _, m in CASES if c == case) if k == key)
        pick = min if better == "lower" else max
        for build in builds:
            ratios = []
            for i, r in enumerate(runs.get(case, {}).get(build, [])):
                peer_values = [rs[i].get(key) for p in peers
                               for rs in [runs[case].get(p, [])] if i < len(rs) and "error" not in rs[i]]
                peer_values = [v for v in peer_values if v]
                value = r.get(key) if "error" not in r else None
                ratios.append(f"{value / pick(peer_values):.2f}" if value and peer_values else "–")
            if any(r != "–" for r in ratios):
                rows.append(f"| {label} | {build} | " + " | ".join(ratios) + " |")
                rounds = max(rounds, len(ratios))
    if not rows:
        return []
    out = ["", "Each round against the best peer of the same round (ratios, round 1, 2, …):", "",
           "| figure | build | " + " | ".join(f"round {i + 1}" for i in range(rounds)) + " |",
           "|---|---|" + "---|" * rounds]
    return out + rows


def table(runs, proxies, meta, scale, route_match=None):
    med = summarize(runs, proxies)
    builds = [p for p in proxies if p in LEGATE_BUILDS]
    peers = [p for p in proxies if p not in LEGATE_BUILDS]
    pairs = [(b, p) for b in builds for p in peers]
    out = []
    out.append(f"# legate benchmark {meta['date']} on {meta['host']}")
    out.append("")
    out.append(f"- machine: {meta['nproc']} CPUs, {meta['cpu_model']}, kernel {meta['kernel']}")
    out.append(f"- legate {meta['versions']['legate']}; {meta['versions']['nginx']}; "
               f"{meta['versions']['haproxy']}; {meta['versions']['wrk']}; {meta['versions']['h2load']}; "
               f"{meta['versions']['iperf3']}; {meta['versions']['pingora']}")
    if "legate-pgo" in proxies:
        out.append("- legate-pgo: the same tree built with profile-guided optimisation and laid out again "
                   "by BOLT (`bench/pgo.sh`, both trained on this benchmark's loads); legate: "
                   "`cargo build --release`.")
    out.append(f"- {meta['reps']} repetition(s) of {meta['duration_s']} s per case and proxy, interleaved; "
               "medians shown. Backend + proxy on CPU 0, client on CPU 1. CPU = utime+stime of the "
               "proxy's processes (all threads) from /proc, before/after the measured run.")
    out.append(f"- load on the machine during the run (loadavg before → after): {meta.get('loadavg_before')} → "
               f"{meta.get('loadavg_after')}; other builds may have been running: read the ratios, not the "
               "absolute numbers.")
    out.append("")
    header = "| case | metric | " + " | ".join(proxies) + " | " + " | ".join(f"{b}/{p}" for b, p in pairs) + " |"
    out.append(header)
    out.append("|" + "---|" * (2 + len(proxies) + len(pairs)))
    for case, _, metrics in CASES:
        if case not in runs:
            continue
        shown = [m for m in metrics if any(med[(case, m[0], p)] is not None for p in proxies)]
        for i, (key, label, better) in enumerate(shown):
            cells = [fmt(med[(case, key, p)]) for p in proxies]
            ratios = []
            for build, p in pairs:
                a, b = med[(case, key, build)], med[(case, key, p)]
                ratios.append(f"{a / b:.2f}" if a is not None and b else "–")
            title = CASE_TITLES[case] if i == 0 else ""
            out.append(f"| {title} | {label} ({better} is better) | " + " | ".join(cells) + " | "
                       + " | ".join(ratios) + " |")
    out += paired_rounds(runs, builds, peers)
    errs = []
    for case in runs:
        for p in runs[case]:
            for i, r in enumerate(runs[case][p]):
                if "error" in r:
                    errs.append(f"{case}/{p} run {i + 1}: {r['error']}")
                elif r.get("non_2xx") or r.get("socket_errors") or r.get("failed") or r.get("errored"):
                    errs.append(f"{case}/{p} run {i + 1}: non-2xx {r.get('non_2xx', 0)}, socket errors "
                                f"{r.get('socket_errors', 0)}, h2 failed {r.get('failed', 0)}, "
                                f"errored {r.get('errored', 0)}")
                elif case == "idle" and r.get("failed"):
                    errs.append(f"idle/{p} run {i + 1}: {r['failed']} connections failed")
                if "syscalls_error" in r:
                    errs.append(f"{case}/{p} run {i + 1}: system calls not counted: {r['syscalls_error'][:200]}")
    out.append("")
    for case in ("http1", "close", "h2c"):
        counted = [(p, r["syscalls_top"]) for p in proxies for r in runs.get(case, {}).get(p, [])
                   if "syscalls_top" in r]
        if counted:
            over = "a 2 s wrk run" if case == "close" else f"{SYSCALL_REQUESTS:,} requests"
            out.append(f"System calls per request, case {CASE_TITLES[case].split('.')[0]}, the most frequent "
                       f"(`strace -c -f` over {over} after the first round's measured run):")
            for p, top in counted:
                out.append(f"- {p}: " + ", ".join(f"{k} {v:.2f}" for k, v in top.items()))
            out.append("")
    if "tls" in runs:
        out.append("TLS as negotiated by OpenSSL's client (`openssl s_client`, as wrk's), per proxy:")
        for p in proxies:
            seen = next((r for r in runs["tls"].get(p, []) if "negotiated" in r), None)
            if seen:
                out.append(f"- {p}: " + "; ".join(", ".join(seen[k].values()) for k in ("negotiated", "negotiated_rsa")))
        out.append("")
    if errs:
        out.append("Errors seen by the load generators (a run with more than 0.1 % failed requests is left out of the medians):")
        out += [f"- {e}" for e in errs]
        out.append("")
    if scale:
        out.append("## 6. Config scale (legate only; medians)")
        out.append("")
        out.append("| config | --mode validate s | start → first 200 s | RSS MiB serving |")
        out.append("|---|---|---|---|")
        for label, rs in scale.items():
            out.append(f"| {label} | {fmt(median([r['validate_s'] for r in rs]))} | "
                       f"{fmt(median([r['time_to_serve_s'] for r in rs]))} | "
                       f"{fmt(median([r['rss_kib'] for r in rs]) / 1024)} |")
        out.append("")
        out.append("`--mode validate` prints the timeout timeline of every route, so its time includes "
                   "writing that output (to a pipe). Routes are prefixes in one virtual host; each cluster "
                   "is STATIC with one endpoint.")
        out.append("")
    if route_match and "error" in route_match:
        out.append(f"Route-match cost per request: not measured ({route_match['error'][:300]})")
        out.append("")
    elif route_match:
        out.append("Route-match cost per request (criterion, `cargo bench -p legate-proxy --bench route_match`; "
                   "the entry configured last matches, the worst case for a linear scan):")
        out.append("")
        out.append("| route table | " + " | ".join(f"{n:,} entries ns" for n in ROUTE_MATCH_SIZES) + " |")
        out.append("|---|" + "---|" * len(ROUTE_MATCH_SIZES))
        for shape, label in ROUTE_MATCH_SHAPES:
            out.append(f"| {label} | " + " | ".join(fmt(route_match[shape][n]) for n in ROUTE_MATCH_SIZES) + " |")
        out.append("")
    return "\n".join(out)


def cmd_version(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return f"{argv[0]}: unavailable"


def metadata(args):
    cpu_model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    src = args.src
    git = subprocess.run(["git", "-C", src, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", src, "status", "--porcelain", "--untracked-files=no", "--", "crates",
                            "Cargo.toml", "Cargo.lock"], capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": socket.gethostname(),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "versions": {
            "legate": git.stdout.strip() + (" (modified tree)" if dirty else ""),
            "nginx": cmd_version(["nginx", "-v"]),
            "haproxy": cmd_version(["haproxy", "-v"]),
            "wrk": cmd_version(["wrk", "-v"]),
            "h2load": cmd_version(["h2load", "--version"]),
            "iperf3": cmd_version(["iperf3", "--version"]),
            "pingora": pingora_version() if args.pingora else "not run",
            "legate-pgo": (f"profile-guided (and BOLT-laid-out) build of the same tree: {args.legate_pgo}"
                           if getattr(args, "legate_pgo", None) else "not run"),
        },
    }


def pingora_version():
    try:
        with open(os.path.join(HERE, "peers", "pingora", "Cargo.lock")) as f:
            m = re.search(r'name = "pingora-proxy"\nversion = "([^"]+)"', f.read())
        return f"pingora-proxy {m.group(1)}" if m else "pingora-proxy ?"
    except OSError:
        return "pingora-proxy ?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--legate", help="the legate release binary (required unless --render)")
    ap.add_argument("--render", metavar="JSON",
                    help="write a results file's table again (its .md beside it) from its .json, and stop")
    ap.add_argument("--src", default=os.path.dirname(HERE), help="legate checkout (for the git hash)")
    ap.add_argument("--quick", action="store_true", help="3 s runs, 1 repetition, 1,000 idle connections")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    ap.add_argument("--idle-conns", type=int, default=5000)
    ap.add_argument("--cases", default="http1,close,h2c,1mib,idle,tcp,tls,scale",
                    help="comma-separated subset of http1,h2c,1mib,idle,tcp,tls,scale")
    ap.add_argument("--proxies", default=",".join(PROXIES))
    ap.add_argument("--pingora", help="the bench/peers/pingora binary: adds Pingora as a fourth proxy")
    ap.add_argument("--legate-pgo", help="a profile-guided legate build (bench/pgo.sh, PGO then BOLT): adds it as a column")
    ap.add_argument("--legate-config", default="legate.yaml",
                    help="legate's config template in configs/ (pgo.sh trains on legate-features.yaml too)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary run directory")
    args = ap.parse_args()
    if args.render:
        with open(args.render) as f:
            saved = json.load(f)
        proxies = list(next(iter(saved["runs"].values()), {}))
        route_match = saved.get("route_match")
        if route_match and "error" not in route_match:
            # JSON keeps the table sizes as strings.
            route_match = {shape: {int(n): ns for n, ns in sizes.items()} for shape, sizes in route_match.items()}
        md = table(saved["runs"], proxies, saved["meta"], saved.get("scale"), route_match)
        with open(os.path.splitext(args.render)[0] + ".md", "w") as f:
            f.write(md + "\n")
        print(md)
        return
    if not args.legate:
        ap.error("--legate is required")
    if args.quick:
        args.reps, args.duration, args.idle_conns = 1, 3, 1000
    args.legate = os.path.abspath(args.legate)
    cases = args.cases.split(",")
    proxies = args.proxies.split(",")
    if "legate-pgo" in proxies and not args.legate_pgo:
        sys.exit("--proxies names legate-pgo: give its binary with --legate-pgo")
    if args.legate_pgo:
        args.legate_pgo = os.path.abspath(args.legate_pgo)
        if "legate-pgo" not in proxies:
            proxies.insert(proxies.index("legate") + 1 if "legate" in proxies else 0, "legate-pgo")
    if args.pingora:
        args.pingora = os.path.abspath(args.pingora)
        if "pingora" not in proxies:
            proxies.append("pingora")
    os.sched_setaffinity(0, {int(CLIENT_CPU)})
    for tool in ("nginx", "haproxy", "wrk", "h2load", "iperf3", "taskset", "openssl"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: run bench/setup.sh")

    meta = metadata(args)
    meta.update(reps=args.reps, duration_s=args.duration, idle_conns=args.idle_conns,
                loadavg_before=open("/proc/loadavg").read().split()[:3])
    bench = Bench(args)
    runs = {}
    scale = route_match = None
    try:
        bench.start_backends()
        for case, fn, _ in CASES:
            if case not in cases:
                continue
            runs[case] = {p: [] for p in proxies}
            for rep in range(args.reps):
                for proxy in proxies:
                    if case in NOT_CONFIGURED.get(proxy, ()):
                        continue
                    p = bench.start(proxy)
                    try:
                        r = getattr(bench, fn)(p)
                    except Exception as e:  # noqa: BLE001 - recorded in the results, run continues
                        r = {"error": str(e)}
                    finally:
                        p.stop()
                    bad = (r.get("non_2xx", 0) + r.get("socket_errors", 0) + r.get("errored", 0)
                           + (r.get("failed", 0) if case == "h2c" else 0))
                    if "error" not in r and bad > 0.001 * max(r.get("requests", 0), 1):
                        r["error"] = f"{bad} failed requests of {r.get('requests')}: run excluded"
                    runs[case][proxy].append(r)
                    shown = {k: round(v, 3) for k, v in r.items() if isinstance(v, float)}
                    print(f"[{case} rep {rep + 1} {proxy}] {r.get('error') or shown}", flush=True)
        if "scale" in cases:
            scale = run_scale(bench, 1 if args.quick else 3)
            print(f"[scale] {scale}", flush=True)
            try:
                route_match = run_route_match(args.src, args.quick)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                route_match = {"error": str(e)}
            print(f"[route_match] {route_match}", flush=True)
    finally:
        bench.stop_backends()
    meta["loadavg_after"] = open("/proc/loadavg").read().split()[:3]

    md = table(runs, proxies, meta, scale, route_match)
    print()
    print(md)
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M")
    base = unused_base(os.path.join(args.out, f"{stamp}-{meta['host']}{'-quick' if args.quick else ''}"))
    with open(base + ".md", "w") as f:
        f.write(md + "\n")
    with open(base + ".json", "w") as f:
        json.dump({"meta": meta, "runs": runs, "scale": scale, "route_match": route_match}, f, indent=1, default=str)
    print(f"\nwrote {base}.md and {base}.json")
    if args.keep:
        print(f"run directory kept: {bench.run_dir}")
    else:
        shutil.rmtree(bench.run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
