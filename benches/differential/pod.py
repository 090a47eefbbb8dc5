"""Scripted raw HTTP/1.1 "pod" for the differential harness (standard library only).

The pod records every byte each upstream connection sends it, parses those bytes as a strict
HTTP/1.1 server would (RFC 9112, rejecting what the RFC lets a server reject), and answers each
request with the scripted response of the running case (by default a small 200 with
Content-Length). A proxy that smuggles shows up here as more requests than the client sent, as
a body parsed as a request, or as a head a strict server refuses.
"""

import asyncio
import re
import threading
import time

MAX_HEAD = 64 * 1024
MAX_CHUNK_LINE = 4096
MAX_BODY = 1 << 20

TCHAR = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
TARGET = re.compile(rb"^[\x21-\x7e]+$")
VERSION = re.compile(rb"^HTTP/1\.[01]$")


class Reject(Exception):
    """The bytes are not a valid HTTP/1.1 request; `reason` names the rule broken."""

    def __init__(self, reason, status=400):
        super().__init__(reason)
        self.reason = reason
        self.status = status


def _lines(head):
    """Splits a head on CRLF; a bare CR or LF anywhere is an error (strict server)."""
    parts = head.split(b"\r\n")
    for p in parts:
        if b"\n" in p:
            raise Reject("bare LF in head")
        if b"\r" in p:
            raise Reject("bare CR in head")
    return parts


def parse_request(buf, expect_sent=False):
    """Parses one request at the start of `buf`.

    Returns (None, None) when more bytes are needed, (request, consumed) when complete, or
    ("continue", request) when the head is complete, `Expect: 100-continue` was sent and no body
    byte has arrived yet. Raises Reject for anything a strict server refuses.
    """
    end = buf.find(b"\r\n\r\n")
    lf_end = buf.find(b"\n\n")
    if end < 0:
        if lf_end >= 0:
            raise Reject("bare LF in head")
        if len(buf) > MAX_HEAD:
            raise Reject("head too large", 431)
        return None, None
    if lf_end >= 0 and lf_end < end:
        raise Reject("bare LF in head")
    if end + 4 > MAX_HEAD:
        raise Reject("head too large", 431)
    head = buf[:end]
    lines = _lines(head)
    rl = lines[0].split(b" ")
    if len(rl) != 3:
        raise Reject("malformed request line")
    method, target, version = rl
    if not TCHAR.match(method):
        raise Reject("bad method")
    if not TARGET.match(target):
        raise Reject("bad target")
    if not VERSION.match(version):
        raise Reject("bad version", 505)
    headers = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise Reject("obs-fold")
        name, sep, value = line.partition(b":")
        if not sep:
            raise Reject("header line without colon")
        if not TCHAR.match(name):
            raise Reject("bad header name %r" % name[:40])
        value = value.strip(b" \t")
        if any(b < 0x20 and b != 0x09 or b == 0x7F for b in value):
            raise Reject("control character in header value")
        headers.append((name.decode("latin-1"), value))
    req = {
        "method": method.decode(),
        "target": target.decode("latin-1"),
        "version": version.decode(),
        "headers": headers,
        "warnings": [],
    }

    def values(n):
        return [v for k, v in headers if k.lower() == n]

    hosts = values("host")
    if version == b"HTTP/1.1" and len(hosts) != 1:
        raise Reject("%d Host headers" % len(hosts))
    if len(hosts) > 1:
        raise Reject("%d Host headers" % len(hosts))
    te = values("transfer-encoding")
    cl = values("content-length")
    conn = b",".join(values("connection")).lower()
    conn_tokens = [t.strip() for t in conn.split(b",") if t.strip()]
    req["close"] = b"close" in conn_tokens or (version == b"HTTP/1.0" and b"keep-alive" not in conn_tokens)
    for t in conn_tokens:
        if t in (b"content-length", b"transfer-encoding", b"host"):
            req["warnings"].append("Connection lists %s" % t.decode())
    pos = end + 4
    if te:
        if version == b"HTTP/1.0":
            raise Reject("Transfer-Encoding in HTTP/1.0")
        if cl:
            raise Reject("Content-Length and Transfer-Encoding")
        codings = [c.strip().lower() for v in te for c in v.split(b",") if c.strip()]
        if codings != [b"chunked"]:
            raise Reject("Transfer-Encoding %r" % b", ".join(codings).decode("latin-1"), 501)
        if len(te) > 1:
            req["warnings"].append("%d Transfer-Encoding lines" % len(te))
        body = bytearray()
        while True:
            le = buf.find(b"\r\n", pos)
            if le < 0:
                if b"\n" in buf[pos:pos + MAX_CHUNK_LINE]:
                    raise Reject("bare LF in chunk line")
                if len(buf) - pos > MAX_CHUNK_LINE:
                    raise Reject("chunk line too long")
                return _need_more(buf, pos, req, expect_sent, end)
            line = buf[pos:le]
            if b"\n" in line or b"\r" in line:
                raise Reject("bare CR/LF in chunk line")
            size_s, _, ext = line.partition(b";")
            size_s = size_s.rstrip(b" \t")
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_s):
                raise Reject("bad chunk size %r" % size_s[:20])
            if ext and not re.fullmatch(rb"[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+([ \t]*=[ \t]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+|\"[^\"\\\x00-\x08\x0a-\x1f\x7f]*\"))?([ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+([ \t]*=[ \t]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+|\"[^\"\\\x00-\x08\x0a-\x1f\x7f]*\"))?)*[ \t]*", ext):
                raise Reject("bad chunk extension")
            size = int(size_s, 16)
            if size > MAX_BODY or len(body) + size > MAX_BODY:
                raise Reject("chunked body too large", 413)
            if size == 0:
                pos = le + 2
                # Trailer section: header lines, then an empty line.
                while True:
                    te_end = buf.find(b"\r\n", pos)
                    if te_end < 0:
                        if b"\n" in buf[pos:]:
                            raise Reject("bare LF in trailer")
                        return _need_more(buf, pos, req, expect_sent, end)
                    tline = buf[pos:te_end]
                    if tline == b"":
                        pos = te_end + 2
                        break
                    if b"\n" in tline or b"\r" in tline:
                        raise Reject("bare CR/LF in trailer")
                    tname, tsep, tval = tline.partition(b":")
                    if not tsep or not TCHAR.match(tname):
                        raise Reject("bad trailer line")
                    req["warnings"].append("trailer %s" % tname.decode("latin-1"))
                    pos = te_end + 2
                req["body"] = bytes(body)
                req["framing"] = "chunked"
                return req, pos
            data_start = le + 2
            if len(buf) < data_start + size + 2:
                return _need_more(buf, data_start, req, expect_sent, end)
            if buf[data_start + size:data_start + size + 2] != b"\r\n":
                raise Reject("chunk data not followed by CRLF")
            body += buf[data_start:data_start + size]
            pos = data_start + size + 2
    if cl:
        nums = [c.strip() for v in cl for c in v.split(b",")]
        if not all(re.fullmatch(rb"[0-9]{1,18}", n) for n in nums):
            raise Reject("bad Content-Length %r" % b", ".join(nums)[:40].decode("latin-1"))
        if len({int(n) for n in nums}) != 1:
            raise Reject("differing Content-Length values")
        if len(nums) > 1:
            req["warnings"].append("%d equal Content-Length values" % len(nums))
        n = int(nums[0])
        if n > MAX_BODY:
            raise Reject("Content-Length too large", 413)
        if len(buf) < pos + n:
            return _need_more(buf, pos, req, expect_sent, end)
        req["body"] = bytes(buf[pos:pos + n])
        req["framing"] = "length"
        return req, pos + n
    req["body"] = b""
    req["framing"] = "none"
    return req, pos


def _need_more(buf, body_pos, req, expect_sent, head_end):
    expect = [v for k, v in req["headers"] if k.lower() == "expect"]
    if expect and not expect_sent and len(buf) == head_end + 4:
        if [e.strip().lower() for e in expect] == [b"100-continue"]:
            return "continue", req
    return None, None


def esc(b, limit=None):
    """Printable rendering of bytes: \\r \\n \\t \\0 and \\xNN for the rest."""
    if limit is not None and len(b) > limit:
        return esc(b[:limit]) + "…(+%d)" % (len(b) - limit)
    out = []
    for c in b:
        if c == 13:
            out.append("\\r")
        elif c == 10:
            out.append("\\n")
        elif c == 9:
            out.append("\\t")
        elif c == 92:
            out.append("\\\\")
        elif 32 <= c < 127:
            out.append(chr(c))
        else:
            out.append("\\x%02x" % c)
    return "".join(out)


def summary(req):
    hs = "; ".join("%s: %s" % (k, esc(v, 60)) for k, v in req["headers"])
    s = "%s %s %s [%s]" % (req["method"], req["target"], req["version"], hs)
    if req.get("body"):
        s += " body=%s" % esc(req["body"], 80)
    if req["warnings"]:
        s += " warnings=%s" % ",".join(req["warnings"])
    return s


class Pod:
    """One pod instance (one listening port) with its own records."""

    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.tag = "startup"
        self.script = None  # (response_parts, close_after) for the case's first request
        self.script_used = False
        self.conns = []  # dicts: id, chunks [(offset, tag, bytes)], events [(tag, kind, text)]
        self.last_activity = time.monotonic()
        self.port = None
        self.server = None

    def set_case(self, tag, script=None):
        with self.lock:
            self.tag = tag
            self.script = script
            self.script_used = False

    def set_tag(self, tag):
        with self.lock:
            self.tag = tag

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer):
        conn = {"id": len(self.conns) + 1, "chunks": [], "events": [], "offset": 0}
        with self.lock:
            self.conns.append(conn)
        buf = bytearray()
        buf_start = 0  # stream offset of buf[0]
        expect_sent = False

        def tag_at(offset):
            t = None
            for off, tag, _ in conn["chunks"]:
                if off <= offset:
                    t = tag
                else:
                    break
            return t

        def event(tag, kind, text=""):
            with self.lock:
                conn["events"].append((tag, kind, text))
                self.last_activity = time.monotonic()

        try:
            while True:
                try:
                    data = await reader.read(65536)
                except (ConnectionError, OSError):
                    data = b""
                if not data:
                    if buf:
                        event(tag_at(buf_start), "partial", esc(bytes(buf), 200))
                    event(self.tag, "eof")
                    break
                with self.lock:
                    conn["chunks"].append((conn["offset"], self.tag, data))
                    conn["offset"] += len(data)
                    self.last_activity = time.monotonic()
                buf += data
                close = False
                while buf:
                    try:
                        req, consumed = parse_request(bytes(buf), expect_sent)
                    except Reject as e:
                        # Size limits are this pod's own, not a framing error of what it received.
                        kind = "limit" if e.status in (413, 431) else "reject"
                        event(tag_at(buf_start), kind, "%s: %s" % (e.reason, esc(bytes(buf), 200)))
                        body = ("pod-rejected: %s\n" % e.reason).encode()
                        writer.write(b"HTTP/1.1 %d Bad Request\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                                     % (e.status, len(body), body))
                        close = True
                        break
                    if req is None:
                        break
                    if req == "continue":
                        expect_sent = True
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                        break
                    expect_sent = False
                    tag = tag_at(buf_start)
                    event(tag, "request", summary(req))
                    del buf[:consumed]
                    buf_start += consumed
                    close = await self._respond(writer, req, tag, conn)
                    if close:
                        break
                await writer.drain()
                if close:
                    event(self.tag, "pod-close")
                    break
        except (ConnectionError, OSError) as e:
            event(self.tag, "error", str(e))
        finally:
            try:
                writer.close()
            except (ConnectionError, OSError):
                pass

    async def _respond(self, writer, req, tag, conn):
        target = req["target"]
        if target.startswith("/victim/"):
            body = ("victim-ok %s\n" % target[len("/victim/"):]).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s"
                         % (len(body), body))
            return req["close"]
        script = None
        with self.lock:
            if self.script is not None and not self.script_used and tag == self.tag and tag.endswith(":case"):
                script = self.script
                self.script_used = True
        if script is not None:
            parts, close_after = script
            for delay, part in parts:
                if delay:
                    await writer.drain()
                    await asyncio.sleep(delay)
                writer.write(part)
            return close_after or req["close"]
        if target.startswith("/slow"):
            # A slow answer to a smuggled request arrives after the proxy has pooled the connection.
            await asyncio.sleep(0.3)
        n = sum(1 for t, k, _ in conn["events"] if k == "request")
        body = ("pod %s conn=%d req=%d %s %s body=%d\n"
                % (self.name, conn["id"], n, req["method"], target, len(req["body"]))).encode()
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n" % len(body)
        if req["close"]:
            head += b"Connection: close\r\n"
        writer.write(head + b"\r\n" + (b"" if req["method"] == "HEAD" else body))
        return req["close"]

    # ------------------------------------------------------------- reading the records

    def quiet_for(self):
        with self.lock:
            return time.monotonic() - self.last_activity

    def records(self, prefix):
        """Everything recorded for tags starting with `prefix`: (requests, rejects, partials,
        bytes per connection)."""
        out = {"requests": [], "rejects": [], "limits": [], "partials": [], "bytes": []}
        with self.lock:
            for c in self.conns:
                got = b"".join(d for _, t, d in c["chunks"] if t and t.startswith(prefix))
                if got:
                    out["bytes"].append((c["id"], got))
                for t, kind, text in c["events"]:
                    if not t or not t.startswith(prefix):
                        continue
                    if kind == "request":
                        out["requests"].append((t, c["id"], text))
                    elif kind == "reject":
                        out["rejects"].append((t, c["id"], text))
                    elif kind == "limit":
                        out["limits"].append((t, c["id"], text))
                    elif kind == "partial":
                        out["partials"].append((t, c["id"], text))
        return out

    def dump(self, path):
        """Per-connection byte logs: every chunk with the case tag active when it arrived."""
        with self.lock, open(path, "w") as f:
            for c in self.conns:
                f.write("=== connection %d\n" % c["id"])
                for off, tag, data in c["chunks"]:
                    f.write("[%s @%d] %s\n" % (tag, off, esc(data)))
                for tag, kind, text in c["events"]:
                    f.write("  <%s %s> %s\n" % (tag, kind, text))


class PodThread:
    """Runs pods on an asyncio loop in a background thread."""

    def __init__(self, names):
        self.loop = asyncio.new_event_loop()
        self.pods = {n: Pod(n) for n in names}
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            for p in self.pods.values():
                self.loop.run_until_complete(p.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError("pods did not start")
