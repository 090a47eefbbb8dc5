#!/usr/bin/env python3
"""kactivator benchmark orchestrator (stdlib only). Run through benches/run.sh.

Phases: warm (direct / kactivator / nginx, HTTP/1.1 + h2c), cold (activator, adapter + gateway
emulator with retries, adapter with hold_until_ready), hold (10,000 requests buffered at zero),
adapter (gRPC check throughput and latency, autoscaler frames). Everything binds 127.0.0.1;
every child runs in its own process group and is killed on exit; every wait is bounded.
"""

import argparse
import atexit
import csv
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.environ.get("BENCH_RESULTS") or os.path.join(ROOT, "benches", "results")
RELEASE = os.path.join(ROOT, "target", os.environ.get("BENCH_PROFILE", "release"))
KACTIVATOR = os.path.join(RELEASE, "kactivator")
EX = os.path.join(RELEASE, "examples")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Fixed loopback ports (away from kactivator's defaults so a dev instance does not collide).
# BENCH_PORT_OFFSET shifts them all, for a second run on a shared machine.
_O = int(os.environ.get("BENCH_PORT_OFFSET", "0"))
P_BACKEND_H1, P_BACKEND_H2 = 18081 + _O, 18082 + _O
P_NGINX_H1, P_NGINX_H2 = 18083 + _O, 18084 + _O
P_HTTP, P_H2C, P_ADMIN, P_GRPC, P_AUTOSCALER = (p + _O for p in (18012, 18013, 18090, 18100, 18180))
P_GATEWAY = 18095 + _O  # the "Service VIP" the gateway emulator routes to
P_OTLP = 18317 + _O  # the OTLP sink of --traces

# CPU pinning (2-core machine): proxies on CPU 1, load generators and backends on CPU 0.
CPU_PROXY, CPU_CLIENT = "1", "0"

PROCS = []
WORK = tempfile.mkdtemp(prefix="kactivator-bench.")
COMMANDS = []  # every measuring command, for the report


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def spawn(name, cmd, cpu=None, env=None):
    full = (["taskset", "-c", cpu] if cpu is not None else []) + cmd
    out = open(os.path.join(WORK, f"{name}.log"), "ab")
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, env=e,
                         start_new_session=True, preexec_fn=raise_nofile)
    p.bench_name = name
    PROCS.append(p)
    return p


def stop(p, grace=5.0):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)
    else:
        # The leader is gone; its group (local pods) may not be.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if p in PROCS:
        PROCS.remove(p)


def sweep_pods():
    """Kills bench pods that outlived their kactivator (pods run in their own process group)."""
    for name in os.listdir(WORK) if os.path.isdir(WORK) else []:
        if not name.startswith("ready-"):
            continue
        with open(os.path.join(WORK, name)) as f:
            for line in f:
                try:
                    pid = int(line.split()[0])
                    with open(f"/proc/{pid}/cmdline", "rb") as c:
                        if b"bench_app" not in c.read():
                            continue
                    os.kill(pid, signal.SIGKILL)
                except (OSError, ValueError, IndexError):
                    pass


def cleanup():
    for p in list(reversed(PROCS)):
        stop(p, grace=3.0)
    sweep_pods()


def on_signal(signum, _frame):
    log(f"signal {signum}: cleaning up")
    sys.exit(130)


def run(cmd, timeout, cpu=None, record=True):
    full = (["taskset", "-c", cpu] if cpu is not None else []) + cmd
    if record:
        COMMANDS.append(" ".join(full))
    r = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                       preexec_fn=raise_nofile)
    if r.returncode != 0:
        log(f"command failed ({r.returncode}): {' '.join(full)}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port, timeout=15.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if port_open(port):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def wait_port_free(port, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not port_open(port):
            return True
        time.sleep(0.05)
    return False


def http_get(url, headers=None, timeout=2.0):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except Exception:  # noqa: BLE001 - any failure is "not yet"
        return 0, ""


def metrics():
    """Every series on kactivator's /metrics: `name` → sum over labels, and `name{labels}` → value."""
    status, text = http_get(f"http://127.0.0.1:{P_ADMIN}/metrics")
    sums = {}
    if status != 200:
        return sums
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)", line)
        if m:
            try:
                v = float(m.group(3))
            except ValueError:
                continue
            sums[m.group(1)] = sums.get(m.group(1), 0.0) + v
            if m.group(2):
                sums[m.group(1) + m.group(2)] = v
    return sums


def series_delta(m0, m1, name):
    """`label=value:delta;…` for the labelled series of `name` that changed between two scrapes."""
    out = []
    for k in sorted(m1):
        if k.startswith(name + "{"):
            d = m1[k] - m0.get(k, 0.0)
            if d:
                labels = ",".join(x.split("=")[1].strip('"') for x in k[len(name) + 1:-1].split(",") if "=" in x)
                out.append(f"{labels}:{d:.0f}")
    return ";".join(out)


def labelled(m, name, **labels):
    """Sum of the series of `name` whose labels include `labels`."""
    total = 0.0
    for k, v in m.items():
        if k.startswith(name + "{") and all(f'{a}="{b}"' in k for a, b in labels.items()):
            total += v
    return total


def tree_pids(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def cpu_ticks(pid):
    """utime + stime (clock ticks) of `pid` and its live descendants."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # fields 14, 15 of stat(5)
        except (OSError, IndexError, ValueError):
            pass
    return total


def own_ticks(pid):
    """utime + stime (clock ticks) of `pid` alone, its threads included, its children not."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def other_ticks():
    """pid → CPU ticks of every process that is not this script or one of its descendants."""
    ours = set(tree_pids(os.getpid()))
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in ours:
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(name)] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return out


class Foreign:
    """CPU used during a measurement by other jobs on the machine, in cores: the CPU-time growth of
    every process outside this script's tree (processes that start and exit inside the window are
    missed, so this is a lower bound)."""

    def __init__(self, _pids=None):
        self.t0, self.s0 = time.time(), other_ticks()

    def cores(self):
        wall = time.time() - self.t0
        s1 = other_ticks()
        used = sum(v - self.s0.get(p, 0) for p, v in s1.items() if v >= self.s0.get(p, 0))
        return round(used / CLK_TCK / wall, 2) if wall > 0 else float("nan")


QUIET_WAIT = [60.0]  # seconds a measurement may wait for other jobs to calm down


def wait_quiet(threshold=0.3):
    """Before a measurement (our processes idle): waits, bounded by QUIET_WAIT, until the machine's
    busy CPU over 1 s is below `threshold` cores. Returns the last sample."""
    deadline = time.time() + QUIET_WAIT[0]
    while True:
        sample = Foreign()
        time.sleep(1.0)
        cores = sample.cores()
        if cores < threshold or time.time() >= deadline:
            if cores >= threshold:
                log(f"machine still busy ({cores:.2f} cores used by other jobs); measuring anyway")
            return cores
        time.sleep(2.0)


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


LISTEN = f"""listen:
  http: 127.0.0.1:{P_HTTP}
  h2c: 127.0.0.1:{P_H2C}
  admin: 127.0.0.1:{P_ADMIN}
  grpc: 127.0.0.1:{P_GRPC}
  autoscaler: 127.0.0.1:{P_AUTOSCALER}
pod_name: bench
"""


def start_kactivator(name, mode, yaml, cpu=None, threads=None, log_level=None, binary=None, extra_env=None):
    for port in (P_HTTP, P_H2C, P_ADMIN, P_GRPC, P_AUTOSCALER):
        if not wait_port_free(port):
            raise RuntimeError(f"port {port} still in use")
    path = os.path.join(WORK, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(LISTEN + yaml)
    env = {"RUST_LOG": log_level or os.environ.get("BENCH_RUST_LOG", "warn")}
    if threads:
        env["TOKIO_WORKER_THREADS"] = str(threads)
    env.update(extra_env or {})
    p = spawn(name, [binary or KACTIVATOR, "--mode", mode, "--config", path, "--log-format", "json"], cpu=cpu, env=env)
    if not wait_port(P_ADMIN, 20, p):
        raise RuntimeError(f"kactivator ({name}) did not start; see {WORK}/{name}.log")
    main_port = P_HTTP if mode == "activator" else P_GRPC
    if not wait_port(main_port, 20, p):
        raise RuntimeError(f"kactivator ({name}) did not bind {main_port}")
    return p


def nginx_conf(name, body):
    prefix = os.path.join(WORK, name)
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
error_log {prefix}/logs/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 16384; multi_accept on; }}
worker_rlimit_nofile 20000;
http {{
  access_log off;
  default_type text/plain;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  http2_max_requests 10000000;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
{body}
}}
""")
    return conf, prefix


def start_nginx(name, body, cpu):
    conf, prefix = nginx_conf(name, body)
    return spawn(name, ["nginx", "-c", conf, "-p", prefix, "-g", "daemon off;"], cpu=cpu)


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# ---------------------------------------------------------------- warm path

WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(out):
    res = {"rps": float("nan"), "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": 0, "requests": 0}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = int(m.group(1))
    for p, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{p}%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            res[key] = float(m.group(1)) * WRK_UNITS[m.group(2)]
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        res["errors"] += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] += sum(int(x) for x in m.groups())
    return res


def parse_h2load(out, logfile, skip_us):
    res = {"rps": float("nan"), "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": 0, "requests": 0}
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    if m:
        res["requests"] = int(m.group(3))
        res["errors"] = int(m.group(4)) + int(m.group(5)) + int(m.group(6))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        res["errors"] += int(m.group(3)) + int(m.group(4))
    m = re.search(r"finished in ([0-9.]+)(s|ms), ([0-9.]+) req/s", out)
    if m:
        res["rps"] = float(m.group(3))
    lat = []
    try:
        with open(logfile) as f:
            rows = [line.split("\t") for line in f]
        if rows:
            t0 = min(int(r[0]) for r in rows)
            lat = [int(r[2]) / 1000 for r in rows if int(r[0]) - t0 >= skip_us]
    except (OSError, ValueError, IndexError):
        pass
    if lat:
        res["p50_ms"], res["p99_ms"] = pct(lat, 50), pct(lat, 99)
    return res


def phase_warm(cfg):
    log("warm path: starting backend (nginx return 200), nginx proxy, kactivator")
    backend = start_nginx("nginx-backend", f"""  server {{
    listen 127.0.0.1:{P_BACKEND_H1} reuseport backlog=4096;
    listen 127.0.0.1:{P_BACKEND_H2} http2;
    location / {{ return 200 "hello\\n"; }}
  }}""", cpu=CPU_CLIENT)
    proxy = start_nginx("nginx-proxy", f"""  upstream backend {{ server 127.0.0.1:{P_BACKEND_H1}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{P_NGINX_H1} backlog=4096;
    listen 127.0.0.1:{P_NGINX_H2} http2;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}""", cpu=CPU_PROXY)
    # TCP probes: the backend's h2c port speaks only HTTP/2 (prior knowledge), which an HTTP/1.1
    # probe cannot reach.
    kact_yaml = f"""discovery: static
activator:
  probe_style: tcp
revisions:
  - namespace: default
    name: warm
    hosts: [warm.bench]
    endpoints: [127.0.0.1:{P_BACKEND_H1}]
    min_scale: 1
  # kactivator's upstream protocol follows the client's: h2c clients need an h2c endpoint
  # (the same nginx backend, on its h2c port).
  - namespace: default
    name: warm-h2
    endpoints: [127.0.0.1:{P_BACKEND_H2}]
    min_scale: 1
"""
    # Variants of kactivator measured in turn on the same ports: this build; with --traces, this
    # build exporting traces at 1 % (OTLP sink on the client core); with BENCH_BASELINE, another
    # binary (e.g. main's) for an unchanged-path comparison.
    variants = [("kactivator", None, None)]
    if os.environ.get("BENCH_BASELINE"):
        variants.append(("kactivator-baseline", os.environ["BENCH_BASELINE"], None))
    sink = None
    if cfg.get("traces"):
        sink = spawn("otlp-sink", [os.path.join(RELEASE, "examples", "bench_otlp_sink"),
                                   "--addr", f"127.0.0.1:{P_OTLP}"], cpu=CPU_CLIENT)
        if not wait_port(P_OTLP, 20, sink):
            raise RuntimeError(f"OTLP sink did not start; see {WORK}/otlp-sink.log")
        variants.append(("kactivator-traces-1pct", None, {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{P_OTLP}",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
        }))
    for port in (P_BACKEND_H1, P_BACKEND_H2, P_NGINX_H1, P_NGINX_H2):
        if not wait_port(port):
            raise RuntimeError(f"nginx port {port} did not open; see {WORK}")
    headers = {"Host": "warm.bench", "Knative-Serving-Namespace": "default", "Knative-Serving-Revision": "warm"}

    def start_variant(name, binary, env):
        p = start_kactivator(f"{name}-warm", "activator", kact_yaml, cpu=CPU_PROXY, threads=1,
                             binary=binary, extra_env=env)
        for _ in range(100):  # ≤ 10 s for the first probe to pass
            if http_get(f"http://127.0.0.1:{P_HTTP}/", headers)[0] == 200:
                return p
            time.sleep(0.1)
        log(f"warm path: {name} does not answer 200 yet; measuring anyway")
        return p

    targets = [("direct", None, P_BACKEND_H1, P_BACKEND_H2)] + \
              [(name, (binary, env), P_HTTP, P_H2C) for name, binary, env in variants] + \
              [("nginx", proxy, P_NGINX_H1, P_NGINX_H2)]
    kact = None
    rows = []
    dur, reps = cfg["warm_duration"], cfg["warm_reps"]
    conns = cfg["warm_connections"]
    hdr_args = []
    for k, v in headers.items():
        hdr_args += ["-H", f"{k}: {v}"]
    for rep in range(reps):
        for name, proc, h1, h2 in targets:
            if isinstance(proc, tuple):
                if kact:
                    stop(kact)
                kact = proc = start_variant(name, *proc)
            for proto in ("h1", "h2c"):
                port = h1 if proto == "h1" else h2
                if proto == "h1":
                    run(["wrk", "-t1", f"-c{conns}", "-d1s"] + hdr_args + [f"http://127.0.0.1:{port}/"],
                        timeout=30, cpu=CPU_CLIENT, record=False)  # warm-up
                    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{dur}s", "--latency"] + hdr_args + [f"http://127.0.0.1:{port}/"]
                else:
                    h2log = os.path.join(WORK, f"h2load-{name}-{rep}.log")
                    cmd = ["h2load", "-t1", f"-c{cfg['h2_connections']}", f"-m{cfg['h2_streams']}",
                           "--warm-up-time=1", f"-D{dur}", f"--log-file={h2log}"] + \
                          ["-H", "knative-serving-namespace: default", "-H", "knative-serving-revision: warm-h2"] + \
                          [f"http://127.0.0.1:{port}/"]
                c0 = cpu_ticks(proc.pid) if proc else 0
                b0 = cpu_ticks(backend.pid)
                wait_quiet()
                foreign = Foreign([p.pid for p in (backend, proxy, kact, sink) if p])
                r = run(cmd, timeout=dur + 60, cpu=CPU_CLIENT)
                foreign_cores = foreign.cores()
                c1 = cpu_ticks(proc.pid) if proc else 0
                b1 = cpu_ticks(backend.pid)
                res = parse_wrk(r.stdout) if proto == "h1" else parse_h2load(r.stdout, h2log, 0)
                # h2load counts warm-up requests separately; its req/s covers the measured window.
                n = res["requests"] or 1
                proxy_us = (c1 - c0) / CLK_TCK * 1e6 / n if proc else float("nan")
                backend_us = (b1 - b0) / CLK_TCK * 1e6 / n
                row = dict(target=name, proto=proto, rep=rep, duration_s=dur, requests=res["requests"],
                           errors=res["errors"], rps=round(res["rps"], 1), p50_ms=res["p50_ms"],
                           p99_ms=res["p99_ms"], proxy_cpu_us_per_req=round(proxy_us, 2),
                           backend_cpu_us_per_req=round(backend_us, 2), foreign_cpu_cores=foreign_cores)
                log(f"warm {name:10s} {proto:3s} rep {rep}: {row['rps']:>9} req/s p50 {row['p50_ms']} ms "
                    f"p99 {row['p99_ms']} ms errors {row['errors']} proxy CPU {row['proxy_cpu_us_per_req']} us/req "
                    f"(other jobs: {foreign_cores} cores)")
                rows.append(row)
    write_csv("warm.csv", rows)
    for p in (kact, proxy, backend, sink):
        if p:
            stop(p)


def write_csv(name, rows):
    if not rows:
        return
    path = os.path.join(RESULTS, name)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    log(f"wrote {os.path.relpath(path, ROOT)}")


# ---------------------------------------------------------------- cold start

def revision_yaml(name, delay_ms, ready_file, extra_env=None, scale_to_zero="1s", cc=0, max_scale=1, hosts=None):
    env = {"DEMO_STARTUP_DELAY_MS": str(delay_ms), "BENCH_READY_FILE": ready_file}
    env.update(extra_env or {})
    env_yaml = "".join(f"      {k}: \"{v}\"\n" for k, v in env.items())
    return f"""  - namespace: default
    name: {name}
    hosts: [{", ".join(hosts or [name + ".bench"])}]
    command: [{EX}/bench_app]
    env:
{env_yaml}    container_concurrency: {cc}
    min_scale: 0
    max_scale: {max_scale}
    scale_to_zero_after: {scale_to_zero}
    startup_timeout: 30s
"""


def supervisor_ready_times(log_path):
    """pid → unix ns of the supervisor's "Pod ready" log line (JSON log of kactivator)."""
    from datetime import datetime
    pod_pid, ready = {}, {}
    try:
        with open(log_path) as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                fields = ev.get("fields", ev)  # flattened or nested JSON
                msg = fields.get("message")
                if msg == "Pod started":
                    pod_pid[fields.get("pod")] = fields.get("pid")
                elif msg == "Pod ready" and fields.get("pod") in pod_pid:
                    ts = datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00"))
                    ns = int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000
                    ready[pod_pid[fields.get("pod")]] = ns
    except OSError:
        pass
    return ready


def annotate_cold(csv_path, arch_label, delay, ready_file, log_path):
    """Splits each trial's excess into `supervisor_detect_ms` (pod bound → the supervisor logged
    it ready; its port poll) and `after_detect_ms` (the rest: endpoints, probe, proxy). Trials and
    pods are matched in order (one pod per trial)."""
    pods = []
    with open(ready_file) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                pods.append((int(parts[0]), int(parts[2])))
    ready = supervisor_ready_times(log_path)
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    i = 0
    for r in rows:
        if r["arch"] != arch_label or int(r["delay_ms"]) != delay:
            continue
        r.setdefault("supervisor_detect_ms", "")
        r.setdefault("after_detect_ms", "")
        if r["ok"] == "1" and i < len(pods) and pods[i][0] in ready:
            detect = (ready[pods[i][0]] - pods[i][1]) / 1e6
            r["supervisor_detect_ms"] = f"{detect:.3f}"
            r["after_detect_ms"] = f"{float(r['excess_ms']) - detect:.3f}"
        i += 1
    fields = list(rows[0].keys()) if rows else []
    for extra in ("supervisor_detect_ms", "after_detect_ms"):
        if extra not in fields:
            fields.append(extra)
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)


def phase_cold(cfg):
    csv_path = os.path.join(RESULTS, "coldstart.csv")
    if os.path.exists(csv_path):
        os.remove(csv_path)
    trials = cfg["cold_trials"]
    for delay in cfg["cold_delays"]:
        for arch in cfg["cold_archs"]:
            ready = os.path.join(WORK, f"ready-{arch}-{delay}.txt")
            open(ready, "w").close()
            extra = {"BENCH_GATEWAY_PORT": str(P_GATEWAY)} if arch != "activator" else {}
            hold = "30s" if arch == "adapter-hold" else "0s"
            mode = "activator" if arch == "activator" else "adapter"
            yaml = f"""discovery: local
adapter:
  hold_until_ready: {hold}
revisions:
{revision_yaml("hello", delay, ready, extra)}"""
            kact = start_kactivator(f"kactivator-cold-{arch}-{delay}", mode, yaml,
                                    log_level="warn,kactivator::autoscaler::supervisor=info")
            api = "extauthz" if arch == "adapter-hold" else "mixer"
            cmd = [f"{EX}/bench_coldstart", "--arch", arch, "--ready-file", ready, "--trials", str(trials),
                   "--delay-ms", str(delay), "--http", f"127.0.0.1:{P_HTTP}", "--host", "hello.bench",
                   "--grpc", f"127.0.0.1:{P_GRPC}", "--api", api, "--upstream", f"127.0.0.1:{P_GATEWAY}",
                   "--deadline-ms", "30000", "--zero-timeout-ms", "60000", "--csv", csv_path]
            log(f"cold: {arch}, app start delay {delay} ms, {trials} trials")
            # kactivator's own CPU (not its pods'): the readiness poll's cost grows with the delay.
            c0, t0 = own_ticks(kact.pid), time.time()
            try:
                r = run(cmd, timeout=trials * 70 + 30)
                sys.stdout.write(r.stderr[-400:])
            except subprocess.TimeoutExpired:
                log(f"cold: {arch} {delay} ms timed out")
            ms = (own_ticks(kact.pid) - c0) * 1000 / os.sysconf("SC_CLK_TCK")
            log(f"cold: {arch} {delay} ms: kactivator CPU {ms:.0f} ms in {time.time() - t0:.1f} s, "
                f"{ms / max(trials, 1):.1f} ms per cold start (scale-down included)")
            stop(kact)
            label = {"activator": "activator", "adapter-retry": f"adapter-retry-{api}",
                     "adapter-hold": f"adapter-hold-{api}"}[arch]
            if os.path.exists(csv_path):
                annotate_cold(csv_path, label, delay, ready,
                              os.path.join(WORK, f"kactivator-cold-{arch}-{delay}.log"))


# ---------------------------------------------------------------- buffering

def phase_hold(cfg):
    n = cfg["hold_requests"]
    ready = os.path.join(WORK, "ready-hold.txt")
    open(ready, "w").close()
    yaml = f"""discovery: local
activator:
  queue_depth: {max(n, 10000)}
  # The default (half the descriptors) is just under 10,000 with a 20,000 limit.
  max_connections: {n + 100}
revisions:
{revision_yaml("hold", cfg["hold_delay_ms"], ready, scale_to_zero="30s", cc=cfg["hold_cc"])}"""
    kact = start_kactivator("kactivator-hold", "activator", yaml)
    time.sleep(2.0)  # let start-up allocations settle before reading the idle RSS
    idle = status_kib(kact.pid, "VmRSS")
    log(f"hold: idle RSS {idle} KiB; sending {n} concurrent requests (pod start delay {cfg['hold_delay_ms']} ms)")
    cmd = [f"{EX}/bench_hold", "--addr", f"127.0.0.1:{P_HTTP}", "--host", "hold.bench", "--requests", str(n),
           "--pid", str(kact.pid), "--ready-file", ready, "--timeout-s", str(cfg["hold_timeout_s"]),
           "--csv", os.path.join(WORK, "hold.csv")]
    try:
        r = run(cmd, timeout=cfg["hold_timeout_s"] + 60, cpu=CPU_CLIENT)
        lines = r.stdout.strip().splitlines()
        if len(lines) >= 2:
            row = dict(zip(lines[-2].split(","), lines[-1].split(",")))
            row["idle_rss_kib_2s_after_start"] = idle
            m = metrics()
            row["queue_rejections"] = int(m.get("kactivator_queue_rejections_total", 0))
            write_csv("hold.csv", [row])
            log(f"hold: {row}")
    except subprocess.TimeoutExpired:
        log("hold: timed out")
    stop(kact)


# ---------------------------------------------------------------- adapter

def phase_adapter(cfg):
    backend = start_nginx("nginx-backend-adapter", f"""  server {{
    listen 127.0.0.1:{P_BACKEND_H1};
    location / {{ return 200 "hello\\n"; }}
  }}""", cpu=CPU_CLIENT)
    revs = "".join(f"""  - namespace: default
    name: bench-{i}
    endpoints: [127.0.0.1:{P_BACKEND_H1}]
""" for i in range(cfg["adapter_revisions"]))
    yaml = f"""discovery: static
activator:
  probe_style: tcp
adapter:
  poke_interval: 1s
revisions:
{revs}"""
    kact = start_kactivator("kactivator-adapter", "adapter", yaml, cpu=CPU_PROXY, threads=1)
    rows = []
    dur = cfg["adapter_duration"]
    for api in ("mixer", "extauthz"):
        for conc, revisions in ((64, 1), (8, 1), (64, cfg["adapter_revisions"])):
            wait_quiet()
            m0, c0, t0 = metrics(), cpu_ticks(kact.pid), time.time()
            foreign = Foreign([kact.pid, backend.pid])
            cmd = [f"{EX}/bench_grpc", "--addr", f"127.0.0.1:{P_GRPC}", "--api", api, "--connections", "4",
                   "--concurrency", str(conc), "--duration-s", str(dur), "--warmup-s", "1",
                   "--revisions", str(revisions), "--threads", "1"]
            r = run(cmd, timeout=dur + 60, cpu=CPU_CLIENT)
            foreign_cores = foreign.cores()
            m1, c1, t1 = metrics(), cpu_ticks(kact.pid), time.time()
            lines = r.stdout.strip().splitlines()
            if len(lines) < 2:
                continue
            row = dict(zip(lines[-2].split(","), lines[-1].split(",")))
            row.pop("label", None)
            wall = t1 - t0
            fname, pname = "kactivator_autoscaler_frames_total", "kactivator_pokes_total"
            frames = labelled(m1, fname, result="sent") - labelled(m0, fname, result="sent")
            if not frames and fname in m1 and not any(k.startswith(fname + "{") for k in m1):
                frames = m1[fname] - m0.get(fname, 0)  # unlabelled counter
            pokes = labelled(m1, pname, result="sent") - labelled(m0, pname, result="sent")
            calls = m1.get("kactivator_adapter_calls_total", 0) - m0.get("kactivator_adapter_calls_total", 0)
            row.update(wall_s=round(wall, 2), adapter_calls_metric=int(calls), frames=int(frames), pokes=int(pokes),
                       frames_by_label=series_delta(m0, m1, fname), pokes_by_label=series_delta(m0, m1, pname),
                       frames_per_revision_per_s=round(frames / revisions / wall, 3) if wall else "",
                       adapter_cpu_us_per_call=round((c1 - c0) / CLK_TCK * 1e6 / max(1, int(calls) or int(row["requests"])), 2),
                       adapter_cpu_util=round((c1 - c0) / CLK_TCK / wall, 3) if wall else "",
                       foreign_cpu_cores=foreign_cores)
            log(f"adapter {api} c={conc} revs={revisions}: {row['rps']} calls/s p99 {row['p99_us']} us, "
                f"frames {frames:.0f} pokes {pokes:.0f} (other jobs: {foreign_cores} cores)")
            rows.append(row)
    write_csv("adapter.csv", rows)
    stop(kact)
    stop(backend)


# ---------------------------------------------------------------- idle RSS

def phase_idle():
    yaml = """discovery: static
revisions:
  - namespace: default
    name: idle
    endpoints: [127.0.0.1:1]
"""
    kact = start_kactivator("kactivator-idle", "activator", yaml)
    time.sleep(3.0)
    rss, hwm = status_kib(kact.pid, "VmRSS"), status_kib(kact.pid, "VmHWM")
    threads = len(os.listdir(f"/proc/{kact.pid}/task"))
    write_csv("idle.csv", [dict(mode="activator", vmrss_kib=rss, vmhwm_kib=hwm, threads=threads)])
    log(f"idle: VmRSS {rss} KiB, VmHWM {hwm} KiB, {threads} threads")
    stop(kact)


def machine_info(args):
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:  # noqa: BLE001
            return ""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return dict(
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        nproc=os.cpu_count(), cpu=cpu, kernel=platform.release(),
        loadavg_start=open("/proc/loadavg").read().split()[:3],
        rustc=sh("rustc --version"), nginx=sh("nginx -v 2>&1"), wrk=sh("wrk -v 2>&1 | head -1"),
        h2load=sh("h2load --version"), git=sh(f"git -C {ROOT} log --oneline -1"),
        mem_total=sh("grep MemTotal /proc/meminfo"), nofile=resource.getrlimit(resource.RLIMIT_NOFILE),
        argv=" ".join(["benches/run.sh"] + args),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs (under 3 minutes)")
    ap.add_argument("--only", default="warm,cold,hold,adapter,idle",
                    help="comma-separated phases: warm,cold,hold,adapter,idle")
    ap.add_argument("--trials", type=int, help="cold-start trials per configuration")
    ap.add_argument("--traces", action="store_true",
                    help="warm: also measure kactivator exporting traces at 1 %% sampling")
    ap.add_argument("--cold-delays", default="0,500,2000",
                    help="comma-separated app start delays (ms) of the cold phase")
    ap.add_argument("--cold-archs", default="activator,adapter-retry,adapter-hold",
                    help="comma-separated architectures of the cold phase")
    args = ap.parse_args()
    atexit.register(cleanup)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    raise_nofile()
    os.makedirs(RESULTS, exist_ok=True)
    cfg = dict(
        warm_duration=3 if args.quick else 10, warm_reps=1 if args.quick else 3, warm_connections=64,
        h2_connections=16, h2_streams=8,
        cold_trials=args.trials or (3 if args.quick else 30),
        cold_delays=[int(d) for d in args.cold_delays.split(",")],
        cold_archs=args.cold_archs.split(","),
        hold_requests=10000, hold_delay_ms=5000 if args.quick else 8000, hold_cc=100, hold_timeout_s=120,
        adapter_duration=3 if args.quick else 10, adapter_revisions=10,
        traces=args.traces,
    )
    phases = args.only.split(",")
    QUIET_WAIT[0] = float(os.environ.get("BENCH_QUIET_WAIT", 2.0 if args.quick else 30.0))
    info = machine_info(sys.argv[1:])
    info["config"] = cfg
    log(f"machine: {info['nproc']} CPUs, {info['cpu']}, kernel {info['kernel']}, load {info['loadavg_start']}")
    started = time.time()
    meta_path = os.path.join(RESULTS, "meta.json")
    previous = {}
    if os.path.exists(meta_path):
        try:
            with open(meta_path) as f:
                previous = json.load(f)
        except (OSError, ValueError):
            previous = {}
    phase_runs = previous.get("phase_runs", {})
    for phase in ("idle", "warm", "cold", "hold", "adapter"):
        if phase not in phases:
            continue
        COMMANDS.clear()
        phase_started = time.time()
        load0 = open("/proc/loadavg").read().split()[:3]
        try:
            {"warm": phase_warm, "cold": phase_cold, "hold": phase_hold, "adapter": phase_adapter,
             "idle": lambda _c: phase_idle()}[phase](cfg)
        except Exception as e:  # noqa: BLE001 - one failed phase must not lose the others
            log(f"phase {phase} failed: {e}")
        finally:
            for p in list(PROCS):
                stop(p)
            sweep_pods()
        phase_runs[phase] = dict(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), argv=info["argv"],
                                 git=info["git"], elapsed_s=round(time.time() - phase_started, 1),
                                 loadavg_start=load0, loadavg_end=open("/proc/loadavg").read().split()[:3],
                                 commands=list(COMMANDS), config=cfg)
    info["elapsed_s"] = round(time.time() - started, 1)
    info["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    info["phases"] = phases
    info["phase_runs"] = phase_runs
    with open(meta_path, "w") as f:
        json.dump(info, f, indent=1)
    log(f"done in {info['elapsed_s']} s; logs in {WORK}")
    if not os.environ.get("BENCH_NO_REPORT"):
        subprocess.run([sys.executable, os.path.join(ROOT, "benches", "report.py")], check=False)
    if not os.environ.get("BENCH_KEEP_LOGS"):
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
