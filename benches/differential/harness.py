#!/usr/bin/env python3
"""Differential harness: ambiguous HTTP/1.1 requests and responses through nginx and kactivator.

Each proxy forwards to its own instance of the same scripted pod (pod.py). Per case, the client
sends the case's bytes on a new connection and reads what comes back; the pod records what it
received and how a strict HTTP/1.1 server parses it; then two "victim" requests, each on a new
client connection, check that nothing left over from the case (a smuggled request, extra response
bytes) answers someone else. Results: benches/results/differential.csv and docs/differential.md.
Exit status: 0 when no kactivator case is UNSAFE, 1 otherwise, 2 when the harness itself failed.
"""

import argparse
import csv
import os
import re
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import cases as corpus  # noqa: E402
from notes import NOTES  # noqa: E402
from pod import PodThread, esc  # noqa: E402

PROXIES = ("nginx", "kactivator")
READ_TOTAL = 3.0  # longest wait for a case's responses
READ_IDLE = 1.0  # silence that ends the wait once something arrived
GRACE = 0.25  # extra wait after the expected responses, to catch bytes that should not be there
VICTIMS = 2
HARD = ("POISONED", "EXTRA-REQ", "CLIENT-DESYNC")
SOFT = ("POD-REJECT", "FWD-NGINX-REJECTED", "RETRY")


def log(msg):
    print("[differential] " + msg, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=15, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


# ------------------------------------------------------------------ client side


def parse_responses(data, methods, closed):
    """Frames the bytes a client received as HTTP/1.1 responses to `methods`, in order.

    Returns (responses, problems, incomplete). A problem is anything that would make a client
    (or a proxy in front of this one) frame the stream differently from the sender: ambiguous
    framing headers, malformed heads, unframed bodies on a connection left open, bytes after the
    last response.
    """
    resps, problems = [], []
    pos, mi = 0, 0
    incomplete = False
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            if b"\n\n" in data[pos:] or b"\r\n\n" in data[pos:]:
                problems.append("bare LF in response head")
            elif closed:
                problems.append("truncated response head: %s" % esc(data[pos:], 60))
            else:
                incomplete = True
            break
        head = data[pos:end]
        if re.search(rb"(?<!\r)\n", head) or re.search(rb"\r(?!\n)", head):
            problems.append("bare CR/LF in response head")
        lines = head.split(b"\r\n")
        m = re.fullmatch(rb"HTTP/1\.[01] ([0-9]{3})( [\x09\x20-\x7e\x80-\xff]*)?", lines[0])
        if not m:
            problems.append("malformed status line: %s" % esc(lines[0], 60))
            break
        status = int(m.group(1))
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or line[:1] in (b" ", b"\t") or not re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
                problems.append("malformed header line: %s" % esc(line, 60))
                continue
            value = value.strip(b" \t")
            if any(c < 0x20 and c != 9 or c == 0x7F for c in value):
                problems.append("control character in header %s" % name.decode("latin-1"))
            headers.append((name.decode("latin-1").lower(), value))
        pos = end + 4
        r = {"status": status, "headers": headers, "body": b""}
        resps.append(r)
        if 100 <= status < 200 and status != 101:
            continue
        method = methods[mi] if mi < len(methods) else "GET"
        mi += 1
        te = [c.strip().lower() for k, v in headers if k == "transfer-encoding" for c in v.split(b",") if c.strip()]
        cls = [c.strip() for k, v in headers if k == "content-length" for c in v.split(b",")]
        conn = [c.strip().lower() for k, v in headers if k == "connection" for c in v.split(b",")]
        if te and cls:
            problems.append("response has both Content-Length and Transfer-Encoding")
        if len(set(cls)) > 1:
            problems.append("response has differing Content-Length values")
        if status == 101:
            r["body"] = data[pos:]
            pos = len(data)
            break
        if method == "HEAD" or status in (204, 304):
            pass
        elif te and te[-1] == b"chunked":
            body, used, err = decode_chunked(data[pos:])
            if err:
                problems.append("bad chunked body: %s" % err)
                break
            if used is None:
                if closed:
                    problems.append("truncated chunked body")
                else:
                    incomplete = True
                break
            r["body"] = body
            pos += used
        elif cls and not te:
            if not all(re.fullmatch(rb"[0-9]{1,18}", c) for c in cls):
                problems.append("bad Content-Length %s" % esc(b",".join(cls)))
                break
            n = int(cls[0])
            if len(data) - pos < n:
                if closed:
                    problems.append("truncated body (%d of %d)" % (len(data) - pos, n))
                else:
                    incomplete = True
                r["body"] = data[pos:]
                pos = len(data)
                break
            r["body"] = data[pos:pos + n]
            pos += n
        else:
            r["body"] = data[pos:]
            pos = len(data)
            if not closed:
                problems.append("response delimited by close but the connection was left open")
            break
        if b"close" in conn and pos < len(data):
            problems.append("bytes after a Connection: close response")
            break
    if pos < len(data) and not problems and not incomplete:
        problems.append("%d bytes after the responses: %s" % (len(data) - pos, esc(data[pos:], 60)))
    return resps, problems, incomplete


def decode_chunked(b):
    """Returns (body, bytes used, error); used is None while incomplete."""
    out, pos = bytearray(), 0
    for _ in range(100000):
        le = b.find(b"\r\n", pos)
        if le < 0:
            return out, None, None
        size_s = b[pos:le].split(b";")[0].strip()
        if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_s):
            return out, None, "chunk size %s" % esc(size_s, 20)
        size = int(size_s, 16)
        if size == 0:
            pos = le + 2
            while True:
                te = b.find(b"\r\n", pos)
                if te < 0:
                    return out, None, None
                if te == pos:
                    return bytes(out), te + 2, None
                pos = te + 2
        if len(b) < le + 2 + size + 2:
            return out, None, None
        out += b[le + 2:le + 2 + size]
        if b[le + 2 + size:le + 4 + size] != b"\r\n":
            return out, None, "chunk data not followed by CRLF"
        pos = le + 4 + size
    return out, None, "too many chunks"


def exchange(port, parts, methods):
    """Sends `parts` on a new connection and reads the answer. Returns a dict."""
    s = socket.create_connection(("127.0.0.1", port), 2)
    data, closed, send_error = bytearray(), False, None
    try:
        for p in parts:
            if p == corpus.WAIT100:
                deadline = time.monotonic() + 1.0
                while b"\r\n\r\n" not in data and time.monotonic() < deadline and not closed:
                    s.settimeout(max(0.01, deadline - time.monotonic()))
                    try:
                        got = s.recv(65536)
                    except socket.timeout:
                        break
                    except OSError:
                        closed = True
                        break
                    if not got:
                        closed = True
                    data += got
                continue
            try:
                s.sendall(p)
            except OSError as e:
                send_error = str(e)
                break
        start = time.monotonic()
        last = start
        done_at = None
        while not closed:
            now = time.monotonic()
            limit = start + READ_TOTAL
            if data:
                limit = min(limit, last + READ_IDLE)
            if done_at is not None:
                limit = min(limit, done_at + GRACE)
            if now >= limit:
                break
            s.settimeout(limit - now)
            try:
                got = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                closed = True
                break
            if not got:
                closed = True
                break
            data += got
            last = time.monotonic()
            if done_at is None:
                resps, problems, incomplete = parse_responses(bytes(data), methods, False)
                finals = [r for r in resps if not (100 <= r["status"] < 200 and r["status"] != 101)]
                if len(finals) >= len(methods) and not incomplete:
                    done_at = last
    finally:
        s.close()
    resps, problems, incomplete = parse_responses(bytes(data), methods, closed)
    return {"data": bytes(data), "closed": closed, "responses": resps, "problems": problems,
            "incomplete": incomplete, "send_error": send_error}


def victim(port, tag):
    raw = b"GET /victim/" + tag.encode() + b" HTTP/1.1\r\nHost: " + corpus.HOST + b"\r\n\r\n"
    try:
        r = exchange(port, [raw], ["GET"])
    except OSError as e:
        return False, "connect failed: %s" % e
    want = b"victim-ok " + tag.encode() + b"\n"
    finals = [x for x in r["responses"] if x["status"] >= 200]
    if (len(r["responses"]) == 1 and finals and finals[0]["status"] == 200 and finals[0]["body"] == want
            and not r["problems"]):
        return True, "clean"
    if not r["data"]:
        return False, "no response"
    return False, "got %s" % esc(r["data"], 160)


# ------------------------------------------------------------------ the proxies

NGINX_CONF = """{user}worker_processes 1;
error_log {prefix}/error.log info;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log {prefix}/access.log;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  upstream pod {{
    server 127.0.0.1:{pod};
    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://pod;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_connect_timeout 2s;
      proxy_read_timeout 2s;
    }}
  }}
}}
"""

KACTIVATOR_CONF = """listen:
  http: 127.0.0.1:{port}
  h2c: 127.0.0.1:{h2c}
  admin: 127.0.0.1:{admin}
  grpc: 127.0.0.1:{grpc}
  autoscaler: 127.0.0.1:{autoscaler}
pod_name: differential
discovery: static
activator:
  probe_style: tcp
  connect_timeout: 1s
revisions:
  - namespace: default
    name: diff
    hosts: [{host}]
    endpoints: [127.0.0.1:{pod}]
    min_scale: 1
    timeout: 10s
"""


def start_nginx(nginx, work, pod_port):
    prefix = os.path.join(work, "nginx")
    os.makedirs(prefix, exist_ok=True)
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(user=user, prefix=prefix, pod=pod_port, port=port))
    out = open(os.path.join(work, "nginx.out"), "w")
    p = subprocess.Popen([nginx, "-c", conf, "-p", prefix, "-g", "daemon off;"], stdout=out, stderr=subprocess.STDOUT)
    if not wait_port(port, 15, p):
        raise RuntimeError("nginx did not start; see %s" % work)
    return p, port


def start_kactivator(binary, work, pod_port):
    port = free_port()
    conf = os.path.join(work, "kactivator.yaml")
    with open(conf, "w") as f:
        f.write(KACTIVATOR_CONF.format(port=port, h2c=free_port(), admin=free_port(), grpc=free_port(),
                                       autoscaler=free_port(), host=corpus.HOST.decode(), pod=pod_port))
    out = open(os.path.join(work, "kactivator.log"), "w")
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
    p = subprocess.Popen([binary, "--mode", "activator", "--config", conf], stdout=out, stderr=subprocess.STDOUT,
                         env=env)
    if not wait_port(port, 20, p):
        raise RuntimeError("kactivator did not start; see %s/kactivator.log" % work)
    return p, port


def wait_ready(port):
    """Until the proxy answers a plain GET with the pod's 200 (kactivator probes first)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            r = exchange(port, [b"GET /ready HTTP/1.1\r\nHost: " + corpus.HOST + b"\r\n\r\n"], ["GET"])
            if r["responses"] and r["responses"][0]["status"] == 200 and r["responses"][0]["body"].startswith(b"pod "):
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def wait_quiet(pod, quiet=0.15, limit=2.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and pod.quiet_for() < quiet:
        time.sleep(0.02)


# ------------------------------------------------------------------ one case


def target_of(summary):
    parts = summary.split(" ", 2)
    return parts[1] if len(parts) > 1 else ""


def run_case(case, pod, port):
    pod.set_case(case.name + ":case", case.response)
    wait_quiet(pod, 0.05, 0.5)
    try:
        r = exchange(port, case.parts, case.methods)
    except OSError as e:
        r = {"data": b"", "closed": True, "responses": [], "problems": [], "incomplete": False,
             "send_error": "connect: %s" % e}
    wait_quiet(pod)
    pod.set_tag(case.name + ":victim")
    victims = [victim(port, "%s/%d" % (case.name, i)) for i in range(1, VICTIMS + 1)]
    wait_quiet(pod, 0.1)
    pod.set_tag("idle")
    rec_case = pod.records(case.name + ":case")
    rec_vic = pod.records(case.name + ":victim")
    seen = [s for _, _, s in rec_case["requests"]]
    seen_late = [s for _, _, s in rec_vic["requests"] if not target_of(s).startswith("/victim/")]
    rejects = [t for _, _, t in rec_case["rejects"] + rec_vic["rejects"]]
    return {
        "client": r,
        "statuses": [x["status"] for x in r["responses"]],
        "requests": seen + seen_late,
        "rejects": rejects,
        "limits": [t for _, _, t in rec_case["limits"] + rec_vic["limits"]],
        "partials": [t for _, _, t in rec_case["partials"]],
        "bytes": rec_case["bytes"] + [(c, b) for c, b in rec_vic["bytes"] if not b.startswith(b"GET /victim/")],
        "victims": victims,
    }


def flags_for(case, me, other=None):
    f = []
    if not all(ok for ok, _ in me["victims"]):
        f.append("POISONED")
    reqs = me["requests"]
    distinct = []
    for s in reqs:
        if s not in distinct:
            distinct.append(s)
    attempts = len(distinct) + len(me["rejects"]) + len(me["limits"])
    if attempts > case.sent:
        f.append("EXTRA-REQ")
    if len(reqs) > len(distinct):
        f.append("RETRY")
    if me["client"]["problems"]:
        f.append("CLIENT-DESYNC")
    if me["rejects"]:
        f.append("POD-REJECT")
    if other is not None and case.kind == "request":
        o_final = [s for s in other["statuses"] if s >= 200]
        other_rejected = (not other["requests"] and not other["rejects"] and not other["limits"]
                          and (not o_final or o_final[0] >= 400))
        if other_rejected and (me["requests"] or me["rejects"] or me["limits"]):
            f.append("FWD-NGINX-REJECTED")
    return f


def verdict(case, flags, k, n):
    note = NOTES.get(case.name, "")
    hard = [x for x in flags if x in HARD]
    soft = [x for x in flags if x in SOFT]
    if hard or (soft and not note.lower().startswith("safe")):
        return "UNSAFE"
    if soft:
        return "reviewed"
    ks, ns = k["statuses"], n["statuses"]
    if any(b"expect:" in p.lower() for p in case.parts if isinstance(p, bytes)):
        # nginx answers `Expect` itself, kactivator's general path leaves it to the pod.
        ks, ns = [x for x in ks if x != 100], [x for x in ns if x != 100]
    if (ks != ns or len(k["requests"]) != len(n["requests"])
            or bool(k["rejects"]) != bool(n["rejects"])):
        return "differs"
    return "same"


def status_text(r):
    c = r["client"]
    s = ",".join(str(x) for x in r["statuses"]) or "none"
    if c["incomplete"]:
        s += " (incomplete)"
    if c["closed"]:
        s += " +close"
    if c.get("send_error"):
        s += " (send: %s)" % c["send_error"][:40]
    return s


def pod_text(r):
    items = (list(r["requests"]) + ["REJECT(%s)" % t for t in r["rejects"]] + ["LIMIT(%s)" % t for t in r["limits"]]
             + ["PARTIAL(%s)" % t for t in r["partials"]])
    return " | ".join(items)


def row_for(case, res):
    n, k = res["nginx"], res["kactivator"]
    nf, kf = flags_for(case, n), flags_for(case, k, n)
    row = {"case": case.name, "kind": case.kind, "description": case.desc, "sent": case.sent}
    for name, r, f in (("nginx", n, nf), ("kactivator", k, kf)):
        row[name + "_status"] = status_text(r)
        row[name + "_client"] = esc(r["client"]["data"], 300)
        row[name + "_client_problems"] = "; ".join(r["client"]["problems"])
        row[name + "_pod_seen"] = len(r["requests"]) + len(r["rejects"]) + len(r["limits"])
        row[name + "_pod_requests"] = pod_text(r)
        row[name + "_pod_bytes"] = " || ".join("c%d: %s" % (c, esc(b, 400)) for c, b in r["bytes"])
        row[name + "_victim"] = "; ".join(t for _, t in r["victims"]) if not all(ok for ok, _ in r["victims"]) else "clean"
        row[name + "_flags"] = " ".join(f)
    row["verdict"] = verdict(case, kf, k, n)
    row["note"] = note_for(case.name, row["verdict"])
    return row


def note_for(name, verdict_):
    """The analysis applies to a case that differs or is flagged; on a `same` case only a note
    that says so (one starting with "same") is kept, so a note outlived by a fix disappears."""
    note = NOTES.get(name, "")
    if verdict_ == "same" and not note.lower().startswith("same"):
        return ""
    return note


COLUMNS = ["case", "kind", "description", "sent",
           "nginx_status", "nginx_client", "nginx_client_problems", "nginx_pod_seen", "nginx_pod_requests",
           "nginx_pod_bytes", "nginx_victim", "nginx_flags",
           "kactivator_status", "kactivator_client", "kactivator_client_problems", "kactivator_pod_seen",
           "kactivator_pod_requests", "kactivator_pod_bytes", "kactivator_victim", "kactivator_flags",
           "verdict", "note"]


def report_only(args):
    """Re-applies notes.py to a recorded CSV (notes and the verdicts of flagged cases), rewrites it
    and the markdown."""
    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        flags = r["kactivator_flags"].split()
        if flags:
            hard = [x for x in flags if x in HARD]
            safe = NOTES.get(r["case"], "").lower().startswith("safe")
            r["verdict"] = "UNSAFE" if hard or not safe else "reviewed"
        r["note"] = note_for(r["case"], r["verdict"])
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    if args.md:
        import report
        report.write(args.md, rows, args)
        log("wrote %s" % args.md)
    return 1 if any(r["verdict"] == "UNSAFE" for r in rows) else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "kactivator"))
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--only", default="", help="comma-separated case names")
    ap.add_argument("--csv", default=os.path.join(ROOT, "benches", "results", "differential.csv"))
    ap.add_argument("--md", default=os.path.join(ROOT, "docs", "differential.md"),
                    help="markdown report; empty to skip")
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "differential"))
    ap.add_argument("--label", default="", help="what the binary is, for the report (default: this tree's commit)")
    ap.add_argument("--list", action="store_true", help="print the case names and exit")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite --md from --csv with the current notes, without running")
    args = ap.parse_args()
    if args.report_only:
        return report_only(args)

    cases = corpus.all_cases()
    if args.list:
        for c in cases:
            print("%-32s %-8s %s" % (c.name, c.kind, c.desc))
        return 0
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {c.name for c in cases}
        if unknown:
            log("unknown cases: %s" % ", ".join(sorted(unknown)))
            return 2
        cases = [c for c in cases if c.name in wanted]
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        log("duplicate case names")
        return 2

    os.makedirs(args.work, exist_ok=True)
    pods = PodThread(PROXIES)
    procs = []
    try:
        ng, ng_port = start_nginx(args.nginx, args.work, pods.pods["nginx"].port)
        procs.append(ng)
        ka, ka_port = start_kactivator(args.binary, args.work, pods.pods["kactivator"].port)
        procs.append(ka)
        ports = {"nginx": ng_port, "kactivator": ka_port}
        for name in PROXIES:
            if not wait_ready(ports[name]):
                raise RuntimeError("%s does not relay to its pod; see %s" % (name, args.work))
        log("nginx :%d -> pod :%d, kactivator :%d -> pod :%d; %d cases"
            % (ng_port, pods.pods["nginx"].port, ka_port, pods.pods["kactivator"].port, len(cases)))
        rows = []
        for case in cases:
            res = {}
            for name in PROXIES:
                res[name] = run_case(case, pods.pods[name], ports[name])
                if procs[PROXIES.index(name)].poll() is not None:
                    raise RuntimeError("%s exited during case %s" % (name, case.name))
            row = row_for(case, res)
            rows.append(row)
            log("%-34s nginx %-16s pod %d | kactivator %-16s pod %d | %s %s"
                % (case.name, row["nginx_status"], row["nginx_pod_seen"], row["kactivator_status"],
                   row["kactivator_pod_seen"], row["verdict"], row["kactivator_flags"]))
        for name in PROXIES:
            pods.pods[name].dump(os.path.join(args.work, "pod-%s.log" % name))
    except (RuntimeError, OSError) as e:
        log("error: %s" % e)
        return 2
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()

    os.makedirs(os.path.dirname(args.csv), exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    log("wrote %s (per-connection pod byte logs in %s)" % (args.csv, args.work))
    if args.md:
        import report
        report.write(args.md, rows, args)
        log("wrote %s" % args.md)
    unsafe = [r for r in rows if r["verdict"] == "UNSAFE"]
    for r in unsafe:
        log("UNSAFE %s: %s; kactivator client %s, pod %s, victim %s"
            % (r["case"], r["kactivator_flags"], r["kactivator_status"], r["kactivator_pod_requests"][:300],
               r["kactivator_victim"][:200]))
    log("%d cases: %d UNSAFE, %d reviewed, %d differ, %d same"
        % (len(rows), len(unsafe), sum(r["verdict"] == "reviewed" for r in rows),
           sum(r["verdict"] == "differs" for r in rows), sum(r["verdict"] == "same" for r in rows)))
    return 1 if unsafe else 0


if __name__ == "__main__":
    try:
        code = main()
    except Exception:  # a harness bug must not read as "UNSAFE" (1)
        import traceback
        traceback.print_exc()
        code = 2
    sys.exit(code)
