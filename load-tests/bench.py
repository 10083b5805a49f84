#!/usr/bin/env python3
"""The body of load-tests/run (which builds the binaries first, then runs this).

Starts redis-server, the upstream (nginx), the reference proxy (nginx) and the gateways on free
127.0.0.1 ports, drives each scenario with portcullis-loadgen, measures the proxy's CPU and
memory from /proc and Redis's work from INFO, and writes load-tests/report/ (results.json,
REPORT.md, chart.svg). Standard library only.

Pinning (2 cores): the proxy under test (gateway or nginx proxy) runs alone on the "proxy" CPU
(1); the upstream, Redis, the load generator and this script share the "client" CPU (0).

Every wait here is bounded: process starts, HTTP calls and each load-generator run have
deadlines, and every process started is stopped, by its pid, on the way out.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONFIGS = os.path.join(HERE, "configs")
RELEASE = os.path.join(ROOT, "target", "release")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The upstream's whole body: exactly 64 bytes.
BODY = "portcullis load-test body, exactly 64 bytes: 0123456789abcdefghi"
assert len(BODY) == 64
# Closed-loop connections, like `wrk -c32` in the figures.
CONNECTIONS = 32
# Bound on the count of one max-throughput run, on top of its duration.
MAX_REQUESTS = 20_000_000
# Fixed-rate runs are at this share of the scenario's measured maximum.
LOAD_SHARE = 0.5
# A fixed-rate measurement is this many runs of a third of the duration each; the run with the
# median p99 is reported. One stall of the VM (tens of ms, seen on these machines for the
# upstream alone) charges every request due during it, and would otherwise decide the row.
FIXED_RUNS = 3
START_TIMEOUT = 20.0
HTTP_TIMEOUT = 5.0

sys.path.insert(0, HERE)
import report  # noqa: E402  (load-tests/report.py, beside this file)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Problem(Exception):
    """A scenario could not be measured; the run goes on with the next one."""


# === ports, HTTP and Redis on loopback ===

_given_ports = set()


def free_port():
    """A free 127.0.0.1 port, never the same twice in one run, never Redis' 6379."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given_ports and port != 6379:
            _given_ports.add(port)
            return port
    raise RuntimeError("no free port found")


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method, url, headers=None, body=None, timeout=HTTP_TIMEOUT):
    """(status, body bytes) of one request; loopback only, no proxy from the environment."""
    assert url.startswith("http://127.0.0.1:"), url
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def redis_call(port, *args, timeout=5.0):
    """One Redis command over RESP; returns str, int or list. Raises on an error reply."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(out)
        f = s.makefile("rb")
        return _resp(f)


def _resp(f):
    line = f.readline()
    if not line:
        raise RuntimeError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError("redis: " + rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode()
    if kind == b"*":
        return [_resp(f) for _ in range(int(rest))]
    raise RuntimeError(f"redis: unexpected reply {line!r}")


# === processes ===


def proc_stat_ticks(pid):
    """utime + stime of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def proc_status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_busy_ticks():
    """user + nice + system ticks of every CPU together (not irq, softirq or steal)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[1]) + int(fields[2]) + int(fields[3]), int(fields[8])


def own_ticks():
    """CPU of this script and of its finished children (the load generator runs), in ticks."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime) * CLK_TCK


def timer_jitter(seconds):
    """How late a 500 µs sleep wakes on an idle CPU: the machine's own noise floor, in µs."""
    late = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        time.sleep(0.0005)
        late.append((time.perf_counter() - t - 0.0005) * 1e6)
    late.sort()
    n = len(late)
    return {"samples": n, "p50": round(late[n // 2]), "p99": round(late[int(n * 0.99)]),
            "p999": round(late[int(n * 0.999)]), "max": round(late[-1])}


def children_of(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            kids.append(int(entry))
    return kids


class Proc:
    """A process this script started (through `taskset`, which execs, so the pid is its own)."""

    def __init__(self, name, argv, cpu, logdir, env=None):
        self.name = name
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.stopped = False
        full = (["taskset", "-c", str(cpu)] if cpu is not None else []) + argv
        with open(self.log_path, "ab") as out:
            self.popen = subprocess.Popen(
                full, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True, cwd=logdir)
        RUNNING.append(self)
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def pids(self):
        """The process and, for nginx, its workers."""
        return [self.pid] + children_of(self.pid)

    def cpu_ticks(self):
        total = 0
        for pid in self.pids():
            try:
                total += proc_stat_ticks(pid)
            except OSError:
                pass
        return total

    def peak_rss_kb(self):
        best = 0
        for pid in self.pids():
            try:
                best = max(best, proc_status_kb(pid, "VmHWM"))
            except OSError:
                pass
        return best

    def log_tail(self, n=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, wait=10.0):
        """Stops it; returns its exit code (None if it had to be killed)."""
        if self.stopped:
            return self.popen.returncode
        self.stopped = True
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                return self.popen.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop in {wait}s, killing it")
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
                return None
        return self.popen.returncode


RUNNING = []


def stop_all():
    for p in reversed(RUNNING):
        try:
            p.stop(wait=5.0)
        except Exception as e:  # cleanup goes on whatever happens
            log(f"stopping {p.name}: {e}")


def wait_until(what, check, timeout=START_TIMEOUT, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise Problem(f"{what}: process exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            if check():
                return
        except (OSError, RuntimeError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise Problem(f"{what}: not ready after {timeout}s" + (f":\n{proc.log_tail()}" if proc else ""))


# === the bench ===


class Bench:
    def __init__(self, opts):
        self.opts = opts
        self.quick = opts.quick
        self.duration = opts.duration or (2.0 if self.quick else 10.0)
        self.warmup = 0.5 if self.quick else 1.0
        self.exact_limit = 500 if self.quick else 2000
        self.tmp = tempfile.mkdtemp(prefix="portcullis-load-")
        self.admin_token = secrets.token_urlsafe(24)
        self.jwt_secret = secrets.token_urlsafe(32)
        ncpu = os.cpu_count() or 1
        if opts.no_pin or ncpu < 2:
            self.client_cpu = self.proxy_cpu = None
        else:
            self.client_cpu, self.proxy_cpu = 0, 1
        self.nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
        self.loadgen = os.path.join(RELEASE, "portcullis-loadgen")
        self.gateway_bin = os.path.join(RELEASE, "portcullis")
        self.floor_bin = os.path.join(RELEASE, "examples", "pingora_floor")
        self.rows = []
        self.crashes = []
        # Responses each scenario got, every run included, to check the access logs against.
        self.sent = {}
        self.current = None
        self.script_commands = lua_commands()
        self.results = {}

    # --- helpers ---

    def render(self, template, out_name, **values):
        with open(os.path.join(CONFIGS, template)) as f:
            text = string.Template(f.read()).substitute(DIR=self.tmp, **values)
        path = os.path.join(self.tmp, out_name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def run_loadgen(self, urls, headers=(), duration=None, rate=None, connections=CONNECTIONS,
                    max_requests=MAX_REQUESTS):
        duration = duration or self.duration
        argv = ([] if self.client_cpu is None else ["taskset", "-c", str(self.client_cpu)]) + [
            self.loadgen, "--connections", str(connections), "--duration", f"{round(duration * 1000)}ms",
            "--max-requests", str(max_requests), "--timeout", "5s"]
        for u in urls:
            argv += ["--url", u]
        for h in headers:
            argv += ["--header", h]
        if rate is not None:
            argv += ["--rate", str(rate)]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
        except subprocess.TimeoutExpired:
            raise Problem("load generator did not finish in time")
        if out.returncode != 0:
            raise Problem(f"load generator failed ({out.returncode}): {out.stderr.strip()}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if self.current is not None:
            self.sent[self.current] = self.sent.get(self.current, 0) + result["requests"]
        return result

    def redis_snapshot(self):
        info = redis_call(self.redis_port, "INFO", "stats", "commandstats")
        calls, reads = {}, 0
        for line in info.splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[len("cmdstat_"):].split(":", 1)
                calls[name] = int(re.search(r"calls=(\d+)", rest).group(1))
            elif line.startswith("total_reads_processed:"):
                reads = int(line.split(":")[1])
        return {"calls": calls, "reads": reads, "cpu": self.redis.cpu_ticks()}

    def redis_time(self):
        sec, _usec = redis_call(self.redis_port, "TIME")
        return int(sec)

    def metrics_snapshot(self, gateways):
        """Sums of selected counters over the gateways' /metrics."""
        totals = {"store_ops": {}, "store_errors": 0.0, "requests": 0.0, "log_dropped": 0.0}
        for gw in gateways:
            status, body = http("GET", gw["admin"] + "/metrics")
            if status != 200:
                continue
            for line in body.decode(errors="replace").splitlines():
                if line.startswith("#") or " " not in line:
                    continue
                name_labels, value = line.rsplit(" ", 1)
                try:
                    value = float(value)
                except ValueError:
                    continue
                if name_labels.startswith("portcullis_store_operation_duration_seconds_count"):
                    op = re.search(r'operation="([^"]*)"', name_labels)
                    op = op.group(1) if op else "?"
                    totals["store_ops"][op] = totals["store_ops"].get(op, 0.0) + value
                elif name_labels.startswith("portcullis_store_errors_total"):
                    totals["store_errors"] += value
                elif name_labels.startswith("portcullis_requests_total"):
                    totals["requests"] += value
                elif name_labels.startswith("portcullis_access_log_dropped_total"):
                    totals["log_dropped"] += value
        return totals

    # --- long-lived processes ---

    def start_redis(self):
        self.redis_port = free_port()
        self.redis = Proc("redis", [
            "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", self.tmp, "--daemonize", "no",
            "--protected-mode", "yes"], self.client_cpu, self.tmp)
        wait_until("redis-server", lambda: redis_call(self.redis_port, "PING") == "PONG",
                   proc=self.redis)

    def start_upstream(self):
        self.upstream_port = free_port()
        os.makedirs(os.path.join(self.tmp, "upstream.tmp"), exist_ok=True)
        conf = self.render("upstream.nginx.conf", "upstream.nginx.conf", BODY=BODY,
                           UPSTREAM_ADDR=f"127.0.0.1:{self.upstream_port}")
        self.upstream = Proc("upstream", [self.nginx, "-p", self.tmp, "-c", conf, "-g",
                                          "daemon off;"], self.client_cpu, self.tmp)
        url = f"http://127.0.0.1:{self.upstream_port}/"
        wait_until("upstream nginx", lambda: http("GET", url) == (200, BODY.encode()),
                   proc=self.upstream)

    def start_nginx_proxy(self):
        port = free_port()
        os.makedirs(os.path.join(self.tmp, "proxy.tmp"), exist_ok=True)
        conf = self.render("proxy.nginx.conf", "proxy.nginx.conf",
                           UPSTREAM_ADDR=f"127.0.0.1:{self.upstream_port}",
                           PROXY_ADDR=f"127.0.0.1:{port}")
        proc = Proc("nginx-proxy", [self.nginx, "-p", self.tmp, "-c", conf, "-g", "daemon off;"],
                    self.proxy_cpu, self.tmp)
        url = f"http://127.0.0.1:{port}/"
        wait_until("nginx proxy", lambda: http("GET", url)[0] == 200, proc=proc)
        return proc, url

    def start_floor(self):
        """examples/pingora_floor.rs: Pingora with no logic, on the proxy CPU."""
        port = free_port()
        proc = Proc("pingora-floor", [self.floor_bin, f"127.0.0.1:{port}",
                                      f"127.0.0.1:{self.upstream_port}"],
                    self.proxy_cpu, self.tmp, env=dict(os.environ, RUST_LOG="warn"))
        url = f"http://127.0.0.1:{port}/"
        wait_until("pingora floor", lambda: http("GET", url)[0] == 200, proc=proc)
        return proc, url

    def start_gateway(self, scenario, node, extra=None):
        proxy, admin = free_port(), free_port()
        values = dict(PROXY_ADDR=f"127.0.0.1:{proxy}", ADMIN_ADDR=f"127.0.0.1:{admin}",
                      REDIS_ADDR=f"127.0.0.1:{self.redis_port}",
                      UPSTREAM_ADDR=f"127.0.0.1:{self.upstream_port}", NODE=node,
                      EXACT_LIMIT=str(self.exact_limit))
        values.update(extra or {})
        path = os.path.join(self.tmp, f"gateway-{node}.toml")
        with open(os.path.join(CONFIGS, "gateway-base.toml")) as f:
            text = f.read()
        with open(os.path.join(CONFIGS, f"gateway-{scenario}.toml")) as f:
            text += "\n" + f.read()
        with open(path, "w") as f:
            f.write(string.Template(text).substitute(DIR=self.tmp, **values))
        env = dict(os.environ, PORTCULLIS_ADMIN_TOKEN=self.admin_token,
                   LOADTEST_JWT_SECRET=self.jwt_secret, RUST_LOG="warn")
        proc = Proc(f"gateway-{node}", [self.gateway_bin, "run", "-c", path], self.proxy_cpu,
                    self.tmp, env=env)
        gw = {"proc": proc, "node": node, "url": f"http://127.0.0.1:{proxy}",
              "admin": f"http://127.0.0.1:{admin}", "config": path}

        def ready():
            status, body = http("GET", gw["admin"] + "/readyz")
            return (status == 200 and json.loads(body)["store"]["state"] == "ok"
                    and port_open(proxy))
        wait_until(f"gateway {node}", ready, proc=proc)
        return gw

    def stop_gateway(self, gw, row):
        proc = gw["proc"]
        died_early = not proc.alive()
        code = proc.stop()
        text = proc.log_tail(40)
        if died_early or code != 0 or "panicked" in text:
            what = (f"gateway {gw['node']} ({row['id']}): "
                    + ("exited during the scenario" if died_early else f"exit code {code}"))
            self.crashes.append({"what": what, "log": text})
            row["problems"].append(what)
            log(what + "\n" + text)

    def count_access_log(self, row, gws):
        """Lines the gateways wrote to their access-log files, against the requests they got."""
        lines = 0
        files = [os.path.join(self.tmp, f"access-{gw['node']}.log") for gw in gws]
        if not any(os.path.exists(f) for f in files):
            return
        for f in files:
            if os.path.exists(f):
                with open(f, "rb") as fh:
                    lines += sum(1 for _ in fh)
        row["access_log_lines"] = lines
        row["requests_sent"] = self.sent.get(row["id"], 0)

    def create_key(self, gw):
        status, body = http("POST", gw["admin"] + "/keys",
                            headers={"Authorization": f"Bearer {self.admin_token}"},
                            body={"consumer": "load-test", "plan": "gold", "scopes": ["read"]})
        if status not in (200, 201):
            raise Problem(f"POST /keys answered {status}: {body[:200]!r}")
        return json.loads(body)["key"]

    def jwt(self, alg):
        now = int(time.time())
        header = {"alg": alg, "typ": "JWT", "kid": "hs1" if alg == "HS256" else "rs1"}
        claims = {"iss": "https://idp.load-test/", "aud": "load-test", "sub": "load-test",
                  "scope": "read", "iat": now, "exp": now + 3600, "jti": secrets.token_hex(8)}
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
        signing_input = (b64(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + b64(json.dumps(claims, separators=(",", ":")).encode()))
        if alg == "HS256":
            sig = hmac.new(self.jwt_secret.encode(), signing_input.encode(), hashlib.sha256).digest()
        else:
            sig = subprocess.run(
                ["openssl", "dgst", "-sha256", "-sign", os.path.join(self.tmp, "jwt-rs256.pem")],
                input=signing_input.encode(), capture_output=True, check=True, timeout=30).stdout
        return signing_input + "." + b64(sig)

    def make_rsa_key(self):
        key = os.path.join(self.tmp, "jwt-rs256.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", key], check=True, capture_output=True,
                       timeout=60)
        subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out",
                        os.path.join(self.tmp, "jwt-rs256.pub.pem")], check=True,
                       capture_output=True, timeout=60)

    # --- measuring one row ---

    def new_row(self, rid, name, kind, note=""):
        row = {"id": rid, "name": name, "kind": kind, "note": note, "problems": []}
        self.rows.append(row)
        return row

    def measure(self, row, procs, urls, headers=(), gateways=(), scrape=False):
        """Warm-up, max-throughput run, then fixed-rate run at LOAD_SHARE of the max."""
        status, body = http("GET", urls[0], headers=dict(h.split(": ", 1) for h in headers))
        self.sent[row["id"]] = self.sent.get(row["id"], 0) + 1
        if status != 200:
            raise Problem(f"first request answered {status}: {body[:300]!r}")
        self.run_loadgen(urls, headers, duration=self.warmup)

        stop_scrape = threading.Event()
        scrapes = [0]

        def scraper():
            while not stop_scrape.wait(1.0):
                for gw in gateways:
                    if http("GET", gw["admin"] + "/metrics")[0] == 200:
                        scrapes[0] += 1
        thread = threading.Thread(target=scraper, daemon=True) if scrape else None

        up0, busy0, own0, wall0 = (self.upstream.cpu_ticks(), cpu_busy_ticks(), own_ticks(),
                                   time.monotonic())
        redis0, cpu0 = self.redis_snapshot(), [p.cpu_ticks() for p in procs]
        metrics0 = self.metrics_snapshot(gateways)
        if thread:
            thread.start()
        maxrun = self.run_loadgen(urls, headers)
        if thread:
            stop_scrape.set()
            thread.join(timeout=10)
        redis1, cpu1 = self.redis_snapshot(), [p.cpu_ticks() for p in procs]
        up1, busy1, own1, wall1 = (self.upstream.cpu_ticks(), cpu_busy_ticks(), own_ticks(),
                                   time.monotonic())
        metrics1 = self.metrics_snapshot(gateways)

        rate = max(1, round(maxrun["rps"] * LOAD_SHARE))
        fixed = self.fixed_rate(urls, headers, rate)
        cpu2 = [p.cpu_ticks() for p in procs]

        n = max(1, maxrun["requests"])
        row["max"], row["fixed"] = maxrun, fixed
        row["upstream_cpu_s_per_10k"] = (up1 - up0) / CLK_TCK / n * 10_000
        # Whatever else ran on the machine during the max-throughput run, in % of one CPU:
        # all CPU time minus that of the processes of this bench.
        ours = ((sum(cpu1) - sum(cpu0)) + (up1 - up0) + (redis1["cpu"] - redis0["cpu"])
                + (own1 - own0))
        row["other_cpu_pct"] = max(0.0, (busy1[0] - busy0[0] - ours)
                                   / ((wall1 - wall0) * CLK_TCK) * 100)
        row["steal_pct"] = (busy1[1] - busy0[1]) / ((wall1 - wall0) * CLK_TCK) * 100
        if procs:
            row["cpu_s_per_10k"] = (sum(cpu1) - sum(cpu0)) / CLK_TCK / n * 10_000
            row["cpu_s_per_10k_fixed"] = ((sum(cpu2) - sum(cpu1)) / CLK_TCK
                                          / max(1, fixed["requests_all_runs"]) * 10_000)
            row["peak_rss_kb"] = [p.peak_rss_kb() for p in procs]
        calls = {k: v - redis0["calls"].get(k, 0) for k, v in redis1["calls"].items()
                 if k != "info" and v - redis0["calls"].get(k, 0) > 0}
        in_script = sum(v for k, v in calls.items() if k in self.script_commands)
        # The store's health check pings on a timer, not per request.
        background = calls.get("ping", 0)
        row["redis"] = {
            "commands_per_request": (sum(calls.values()) - in_script - background) / n,
            "commands_in_lua_per_request": in_script / n,
            "reads_per_request": max(0, redis1["reads"] - redis0["reads"] - 1) / n,
            "cpu_s_per_10k": (redis1["cpu"] - redis0["cpu"]) / CLK_TCK / n * 10_000,
            "calls": calls,
        }
        if gateways:
            ops = {k: v - metrics0["store_ops"].get(k, 0.0)
                   for k, v in metrics1["store_ops"].items()}
            row["gateway_metrics"] = {
                "store_ops_per_request": {k: v / n for k, v in ops.items() if v > 0},
                "store_errors": metrics1["store_errors"] - metrics0["store_errors"],
                "requests_counted": metrics1["requests"] - metrics0["requests"],
                "access_log_dropped": metrics1["log_dropped"] - metrics0["log_dropped"],
                "metrics_scrapes": scrapes[0],
            }
            if row["gateway_metrics"]["store_errors"]:
                row["problems"].append(
                    f"{row['gateway_metrics']['store_errors']:.0f} store errors during the run")
        for run_name, run in (("max", maxrun), ("fixed", fixed)):
            bad = {s: c for s, c in run["status"].items() if s != "200"}
            if bad or run["errors"]:
                row["problems"].append(
                    f"{run_name} run: non-200 {bad}, {run['errors']} errors"
                    + (f" (first: {run['first_error']})" if run.get("first_error") else ""))
        log(f"  {row['id']}: {maxrun['rps']:.0f} req/s, p99 {maxrun['latency_us']['p99']} µs; "
            f"@{rate}/s p99 {fixed['latency_us']['p99']} µs")

    def fixed_rate(self, urls, headers, rate):
        """FIXED_RUNS fixed-rate runs; the one with the median p99, with every run's p99."""
        runs = [self.run_loadgen(urls, headers, rate=rate,
                                 duration=max(0.5, self.duration / FIXED_RUNS))
                for _ in range(FIXED_RUNS)]
        runs.sort(key=lambda r: r["latency_us"]["p99"])
        median = dict(runs[len(runs) // 2])
        median["p99_of_runs"] = [r["latency_us"]["p99"] for r in runs]
        median["requests_all_runs"] = sum(r["requests"] for r in runs)
        # Correctness counts over every run, so a failure in a run not shown is still reported.
        status = {}
        for r in runs:
            for code, count in r["status"].items():
                status[code] = status.get(code, 0) + count
        median["status"] = status
        median["errors"] = sum(r["errors"] for r in runs)
        median["first_error"] = next((r["first_error"] for r in runs if r.get("first_error")),
                                     None)
        return median

    def direct_reference(self, row):
        """The upstream alone at the row's fixed rate: what the proxy's latency is added to."""
        if "fixed" not in row:
            return
        rate = row["fixed"]["target_rate"]
        row["direct_at_rate"] = self.fixed_rate([self.upstream_url], (), rate)

    # --- scenarios ---

    def scenario(self, rid, name, kind, body, note=""):
        if self.opts.only and rid not in self.opts.only:
            return
        row = self.new_row(rid, name, kind, note)
        self.current = rid
        log(f"scenario {rid}: {name}")
        started = time.monotonic()
        try:
            body(row)
        except Problem as e:
            row["problems"].append(str(e))
            log(f"  {rid}: not measured: {e}")
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
            row["problems"].append(f"{type(e).__name__}: {e}")
            log(f"  {rid}: failed: {type(e).__name__}: {e}")
        row["wall_s"] = round(time.monotonic() - started, 1)
        self.current = None

    def gateway_scenario(self, scenario, headers_for=None, nodes=1, scrape=False, after=None):
        def body(row):
            gws = []
            try:
                for i in range(nodes):
                    gws.append(self.start_gateway(scenario, f"{row['id']}-{i + 1}"))
                headers = headers_for(gws[0]) if headers_for else []
                self.measure(row, [g["proc"] for g in gws], [g["url"] + "/" for g in gws],
                             headers, gateways=gws, scrape=scrape)
                if after:
                    after(row, gws)
            finally:
                for gw in gws:
                    self.stop_gateway(gw, row)
            self.count_access_log(row, gws)
            self.direct_reference(row)
        return body

    def exactness(self, row, gws):
        """Offers 5 × L requests to a route limited to L per hour, spread over every node."""
        row["exactness"] = []
        for algorithm, path in (("sliding_window", "/exact-window"), ("sliding_log", "/exact-log")):
            t0 = self.redis_time()
            run = self.run_loadgen([g["url"] + path for g in gws], connections=30,
                                   max_requests=5 * self.exact_limit)
            t1 = self.redis_time()
            admitted = run["status"].get("200", 0)
            row["exactness"].append({
                "algorithm": algorithm, "limit": self.exact_limit, "offered": run["requests"],
                "admitted": admitted, "denied": run["status"].get("429", 0),
                "other": {s: c for s, c in run["status"].items() if s not in ("200", "429")},
                "errors": run["errors"], "rps": run["rps"],
                "one_window": t0 // 3600 == t1 // 3600,
            })
            log(f"  exactness {algorithm}: admitted {admitted} of limit {self.exact_limit} "
                f"({run['requests']} offered)")

    def jitter(self):
        """timer_jitter on each CPU this bench uses, with nothing of ours running there."""
        if self.client_cpu is None:
            return {"any": timer_jitter(1.0)}
        out = {}
        for name, cpu in (("proxy_cpu", self.proxy_cpu), ("client_cpu", self.client_cpu)):
            os.sched_setaffinity(0, {cpu})
            out[name] = timer_jitter(1.0)
        os.sched_setaffinity(0, {self.client_cpu})
        return out

    def run(self):
        started = datetime.datetime.now(datetime.timezone.utc)
        about = machine(os.getloadavg())
        if self.client_cpu is not None:
            os.sched_setaffinity(0, {self.client_cpu})
        log(f"temp dir {self.tmp}; {'quick' if self.quick else 'full'} run, "
            f"{self.duration:g}s per measurement")
        jitter_before = self.jitter()
        self.start_redis()
        self.start_upstream()
        self.upstream_url = f"http://127.0.0.1:{self.upstream_port}/"
        self.make_rsa_key()

        def direct(row):
            self.measure(row, [], [self.upstream_url])

        def nginx_proxy(row):
            proc, url = self.start_nginx_proxy()
            try:
                self.measure(row, [proc], [url])
            finally:
                code = proc.stop(sig=signal.SIGQUIT)
                if code not in (0, None):
                    row["problems"].append(f"nginx proxy exit code {code}")
            self.direct_reference(row)

        def pingora_floor(row):
            proc, url = self.start_floor()
            try:
                self.measure(row, [proc], [url])
            finally:
                proc.stop()
            self.direct_reference(row)

        key_header = lambda gw: [f"X-Api-Key: {self.create_key(gw)}"]  # noqa: E731
        self.scenario("1", "direct to upstream", "direct", direct,
                      "the ceiling: load generator and upstream share the client CPU")
        self.scenario("2", "gateway, plain route", "gateway", self.gateway_scenario("plain"))
        self.scenario("2f", "Pingora, no logic (floor)", "floor", pingora_floor,
                      "examples/pingora_floor.rs: fixed peer, no filters; same allocator and "
                      "runtime settings as the gateway")
        self.scenario("3", "nginx proxy_pass (reference)", "nginx", nginx_proxy,
                      "1 worker, upstream keepalive 64")
        self.scenario("4", "gateway + API key", "gateway",
                      self.gateway_scenario("api-key", key_header),
                      "one key from POST /keys, reused: local-tier hits")
        self.scenario("5a", "gateway + JWT HS256", "gateway",
                      self.gateway_scenario(
                          "jwt-hs256", lambda gw: [f"Authorization: Bearer {self.jwt('HS256')}"]),
                      "one token, reused")
        self.scenario("5b", "gateway + JWT RS256", "gateway",
                      self.gateway_scenario(
                          "jwt-rs256", lambda gw: [f"Authorization: Bearer {self.jwt('RS256')}"]),
                      "one token, reused; RSA-2048")
        self.scenario("6", "gateway + Redis sliding_window limit", "gateway",
                      self.gateway_scenario("limit"), "one rule, never denies")
        self.scenario("7", "edge route: key + 2 limits + log + metrics", "gateway",
                      self.gateway_scenario("edge", key_header, scrape=True),
                      "access log to a file, /metrics scraped every second")
        self.scenario("8", "3 gateways, one Redis (edge route)", "cluster",
                      self.gateway_scenario("cluster", key_header, nodes=3, scrape=True,
                                            after=self.exactness),
                      "all three on the proxy CPU; CPU is their sum, RSS the largest")
        skipped = self.new_row("9", "response cache hits (local tier, Redis)", "skipped",
                               "skipped: Portcullis has no response cache yet")
        skipped["skipped"] = True

        jitter_after = self.jitter()
        finished = datetime.datetime.now(datetime.timezone.utc)
        self.results = {
            "started": started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "command": self.opts.command,
            "quick": self.quick,
            "duration_s": self.duration,
            "connections": CONNECTIONS,
            "load_share": LOAD_SHARE,
            "pinning": {"client_cpu": self.client_cpu, "proxy_cpu": self.proxy_cpu},
            "machine": dict(about, loadavg_after=[round(x, 2) for x in os.getloadavg()]),
            "timer_jitter_us": {"before": jitter_before, "after": jitter_after},
            "rows": self.rows,
            "crashes": self.crashes,
        }


def lua_commands():
    """Commands the gateway's Lua scripts call: counted in Redis' commandstats, but not sent."""
    names = set()
    for base, _dirs, files in os.walk(os.path.join(ROOT, "src")):
        for name in files:
            if name.endswith(".lua"):
                with open(os.path.join(base, name)) as f:
                    names.update(m.lower() for m in
                                 re.findall(r"redis\.p?call\(\s*'([A-Za-z]+)'", f.read()))
    return sorted(names)


def command_output(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine(load_before):
    lscpu = command_output(["lscpu"])
    model = re.search(r"Model name:\s*(.+)", lscpu)
    mem = command_output(["free", "-h"]).splitlines()
    git = command_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
    return {
        "nproc": str(os.cpu_count()),
        "cpu_model": model.group(1).strip() if model else "unknown",
        "hypervisor": (re.search(r"Hypervisor vendor:\s*(.+)", lscpu) or [None, None])[1],
        "memory": mem[1].split()[1] if len(mem) > 1 else "unknown",
        "free": "\n".join(mem),
        "kernel": platform.release(),
        "os": command_output(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "rustc": command_output(["rustc", "-V"]),
        "nginx": command_output([shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:"
                                              + os.environ.get("PATH", "")) or "nginx", "-v"]),
        "redis": command_output(["redis-server", "--version"]),
        "git": git + (" (working tree with uncommitted changes)" if dirty else ""),
        "loadavg_before": [round(x, 2) for x in load_before],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="about 2 s per measurement")
    ap.add_argument("--duration", type=float, help="seconds per measurement (default 10, quick 2)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--out", default=os.path.join(HERE, "report"), help="report directory")
    ap.add_argument("--command", default="load-tests/run", help="command line for the report")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--only", type=lambda v: v.split(","),
                    help="comma-separated scenario ids to run, e.g. 2,3 (for investigating)")
    opts = ap.parse_args()
    if opts.duration is not None and not 0.5 <= opts.duration <= 60:
        ap.error("--duration must be between 0.5 and 60 seconds")

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    bench = Bench(opts)
    for path, what in ((bench.loadgen, "load generator"), (bench.gateway_bin, "gateway")):
        if not os.access(path, os.X_OK):
            sys.exit(f"bench: no {what} at {path}: run load-tests/run (it builds both)")
    if not bench.nginx:
        sys.exit("bench: nginx not found (Debian package nginx)")
    try:
        bench.run()
    finally:
        stop_all()
        if opts.keep_tmp or bench.crashes:
            log(f"configs and logs kept in {bench.tmp}")
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    os.makedirs(opts.out, exist_ok=True)
    with open(os.path.join(opts.out, "results.json"), "w") as f:
        json.dump(bench.results, f, indent=1)
    report.write_all(bench.results, opts.out)
    print(report.text_table(bench.results))
    print(report.targets_text(bench.results))
    print(f"\nreport: {os.path.relpath(os.path.join(opts.out, 'REPORT.md'), os.getcwd())}")


if __name__ == "__main__":
    main()
