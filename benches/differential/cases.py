"""The corpus: ambiguous HTTP/1.1 requests (sent by the client) and responses (sent by the pod).

Each case is what the client writes on one new connection, how many requests a correct reading
of it contains (`sent`), the request methods in order (to frame the responses the client reads),
and optionally the raw response the pod answers the case's first request with.
"""

import gzip

HOST = b"diff.test"
WAIT100 = "wait-for-100"

# A whole request hidden in a body: a proxy that frames the body differently from the pod
# makes the pod see it as a second request (its response then answers the next client).
SMUG = b"GET /smuggled HTTP/1.1\r\nHost: " + HOST + b"\r\n\r\n"


class Case:
    def __init__(self, name, kind, desc, parts, sent=1, methods=None, response=None, close_after=False):
        self.name = name
        self.kind = kind
        self.desc = desc
        self.parts = parts if isinstance(parts, list) else [parts]
        self.sent = sent
        if methods is None:
            first = next(p for p in self.parts if isinstance(p, bytes))
            methods = [first.split(b" ", 1)[0].decode("latin-1")]
        self.methods = methods
        # The pod's answer to the case's first request: [(delay_s, bytes)], close afterwards.
        self.response = None
        if response is not None:
            if isinstance(response, bytes):
                response = [(0, response)]
            self.response = (response, close_after)


def req(name, desc, head_lines, body=b"", method=b"POST", target=b"/", version=b"HTTP/1.1",
        host=True, eol=b"\r\n", **kw):
    lines = [method + b" " + target + b" " + version]
    if host:
        lines.append(b"Host: " + HOST)
    lines += head_lines
    raw = eol.join(lines) + eol + eol + body
    return Case(name, "request", desc, raw, **kw)


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


CHUNKED_SMUG = chunk(SMUG) + b"0\r\n\r\n"
# CL.TE: a Content-Length reader takes everything; a chunked reader stops at "0" and sees SMUG.
CLTE_BODY = b"0\r\n\r\n" + SMUG


def cl(n):
    return b"Content-Length: %d" % n


def request_cases():
    c = []
    # --- Content-Length and Transfer-Encoding together
    c.append(req("cl-te", "CL covering `0` chunk + smuggled request, and TE: chunked",
                 [cl(len(CLTE_BODY)), b"Transfer-Encoding: chunked"], CLTE_BODY))
    c.append(req("te-cl", "TE: chunked first, then a CL of 4 that ends inside the chunk",
                 [b"Transfer-Encoding: chunked", cl(4)], CHUNKED_SMUG))
    # --- Content-Length values
    c.append(req("cl-two-differing", "Content-Length: 5 and Content-Length: (body length)",
                 [cl(5), cl(5 + len(SMUG))], b"hello" + SMUG))
    c.append(req("cl-two-equal", "two equal Content-Length headers", [cl(5), cl(5)], b"hello"))
    c.append(req("cl-list-equal", "Content-Length: 5, 5", [b"Content-Length: 5, 5"], b"hello"))
    c.append(req("cl-list-differing", "Content-Length: 5, (body length)",
                 [b"Content-Length: 5, %d" % (5 + len(SMUG))], b"hello" + SMUG))
    c.append(req("cl-plus", "Content-Length: +5", [b"Content-Length: +5"], b"hello"))
    c.append(req("cl-leading-zeros", "Content-Length: 0005", [b"Content-Length: 0005"], b"hello"))
    c.append(req("cl-spaces", "Content-Length with spaces around the value (legal OWS)",
                 [b"Content-Length:   5   "], b"hello"))
    c.append(req("cl-inner-space", "Content-Length: 5 0", [b"Content-Length: 5 0"], b"hello"))
    c.append(req("cl-hex", "Content-Length: 0x5", [b"Content-Length: 0x5"], b"hello"))
    c.append(req("cl-negative", "Content-Length: -1", [b"Content-Length: -1"], b"hello"))
    c.append(req("cl-huge", "Content-Length: 2^64+1 (overflows 64 bits)",
                 [b"Content-Length: 18446744073709551617"], b"hello"))
    c.append(req("cl-huge-valid", "Content-Length: 10^15 (valid, never sent)",
                 [b"Content-Length: 1000000000000000"], b"hello"))
    # --- Connection naming the framing headers
    c.append(req("conn-content-length", "`Connection: content-length` with a CL body holding a request",
                 [b"Connection: content-length", cl(len(SMUG))], SMUG))
    slow = SMUG.replace(b"/smuggled", b"/slow-smuggled")
    c.append(req("conn-content-length-slow", "as `conn-content-length`, the pod answers the hidden request 300 ms late",
                 [b"Connection: content-length", cl(len(slow))], slow))
    c.append(req("conn-keepalive-content-length", "`Connection: keep-alive, Content-Length`",
                 [b"Connection: keep-alive, Content-Length", cl(len(SMUG))], SMUG))
    c.append(req("conn-transfer-encoding", "`Connection: transfer-encoding` with a chunked body",
                 [b"Connection: transfer-encoding", b"Transfer-Encoding: chunked"], CHUNKED_SMUG))
    c.append(req("conn-host", "`Connection: host`", [b"Connection: host"], method=b"GET"))
    c.append(req("conn-custom", "`Connection: x-hop` + `X-Hop: 1` (must be dropped)",
                 [b"Connection: x-hop", b"X-Hop: 1"], method=b"GET"))
    c.append(req("conn-close-body", "`Connection: close` with a CL body and a pipelined request",
                 [b"Connection: close", cl(5)], b"hello" + SMUG))
    # --- obfuscated Transfer-Encoding (each also carries a CL.TE body)
    for name, line in [
        ("te-xchunked", b"Transfer-Encoding: xchunked"),
        ("te-chunked-identity", b"Transfer-Encoding: chunked, identity"),
        ("te-identity-chunked", b"Transfer-Encoding: identity, chunked"),
        ("te-leading-space", b"Transfer-Encoding:  chunked"),
        ("te-tab", b"Transfer-Encoding:\tchunked"),
        ("te-space-before-colon", b"Transfer-Encoding : chunked"),
        ("te-odd-case", b"tRANSFER-eNCODING: cHUNKED"),
        ("te-two-headers", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity"),
        ("te-obs-fold", b"Transfer-Encoding:\r\n chunked"),
        ("te-vtab", b"Transfer-Encoding:\x0bchunked"),
        ("te-chunked-trailing-junk", b"Transfer-Encoding: chunked;q=1"),
    ]:
        c.append(req(name + "+cl", "`%s` plus a CL covering a CL.TE body" % line.decode("latin-1").replace("\r\n", "\\r\\n").replace("\t", "\\t").replace("\x0b", "\\x0b"),
                     [cl(len(CLTE_BODY)), line], CLTE_BODY))
    c.append(req("te-xchunked", "`Transfer-Encoding: xchunked` alone, chunked body holding a request",
                 [b"Transfer-Encoding: xchunked"], CHUNKED_SMUG))
    c.append(req("te-gzip-request", "`Transfer-Encoding: gzip, chunked` request",
                 [b"Transfer-Encoding: gzip, chunked"], chunk(gzip.compress(b"hello")) + b"0\r\n\r\n"))
    # --- line endings and control characters
    c.append(req("bare-lf", "every line ends in bare LF", [cl(5)], b"hello", eol=b"\n"))
    c.append(req("bare-lf-hides-cl", "one header line ends in bare LF before Content-Length",
                 [b"X-A: 1\n" + cl(len(SMUG))], SMUG))
    c.append(req("bare-cr-in-value", "bare CR inside a header value followed by Content-Length",
                 [b"X-A: 1\r" + cl(len(SMUG))], SMUG))
    c.append(req("nul-in-value", "NUL inside a header value", [b"X-A: a\x00b"], method=b"GET"))
    c.append(req("header-name-space", "header name with a space (`X A: 1`)", [b"X A: 1"], method=b"GET"))
    c.append(req("header-no-colon", "header line without a colon", [b"XA"], method=b"GET"))
    c.append(req("obs-fold-value", "ordinary header folded onto a second line", [b"X-A: 1\r\n  2"],
                 method=b"GET"))
    # --- Host and target
    c.append(req("host-duplicate-same", "two identical Host headers", [b"Host: " + HOST], method=b"GET"))
    c.append(req("host-duplicate-other", "second Host header names another site", [b"Host: other.test"],
                 method=b"GET"))
    c.append(req("host-absent", "HTTP/1.1 request without Host", [], method=b"GET", host=False))
    c.append(req("absolute-form-other-host", "absolute-form target naming another host than Host",
                 [], method=b"GET", target=b"http://other.test/abs"))
    c.append(req("absolute-form-same-host", "absolute-form target with the same host", [], method=b"GET",
                 target=b"http://diff.test/abs"))
    c.append(req("request-line-double-space", "`GET  / HTTP/1.1`", [], method=b"GET ", target=b"/"))
    c.append(req("version-1.10", "`HTTP/1.10` version", [], method=b"GET", version=b"HTTP/1.10"))
    # --- chunked bodies
    c.append(req("chunked-valid", "plain valid chunked body (baseline)", [b"Transfer-Encoding: chunked"],
                 chunk(b"hello") + b"0\r\n\r\n"))
    c.append(req("chunk-size-bad", "chunk size `zz`", [b"Transfer-Encoding: chunked"],
                 b"zz\r\nhello\r\n0\r\n\r\n"))
    c.append(req("chunk-extension", "chunk extension `5;ext=1`", [b"Transfer-Encoding: chunked"],
                 b"5;ext=1\r\nhello\r\n0\r\n\r\n"))
    c.append(req("chunk-extension-bare-lf", "chunk extension containing a bare LF",
                 [b"Transfer-Encoding: chunked"], b"5;a=\"\n\"\r\nhello\r\n0\r\n\r\n" + SMUG))
    c.append(req("chunk-size-overflow", "chunk size 2^64+5 (wraps to 5 in 64 bits)",
                 [b"Transfer-Encoding: chunked"], b"10000000000000005\r\nhello\r\n0\r\n\r\n"))
    c.append(req("chunk-missing-final-crlf", "last chunk without the final CRLF, then a request",
                 [b"Transfer-Encoding: chunked"], b"5\r\nhello\r\n0\r\n" + SMUG))
    c.append(req("chunk-data-too-long", "chunk of size 3 carrying 5 bytes", [b"Transfer-Encoding: chunked"],
                 b"3\r\nhello\r\n0\r\n\r\n"))
    c.append(req("chunk-bare-lf", "chunk lines ending in bare LF", [b"Transfer-Encoding: chunked"],
                 b"5\nhello\n0\n\n"))
    c.append(req("chunk-trailers", "chunked body with a trailer field", [b"Transfer-Encoding: chunked"],
                 chunk(b"hello") + b"0\r\nX-Trailer: 1\r\n\r\n"))
    c.append(req("chunk-trailer-content-length", "trailer named Content-Length",
                 [b"Transfer-Encoding: chunked"], chunk(b"hello") + b"0\r\nContent-Length: 50\r\n\r\n"))
    # --- versions, Expect, pipelining, sizes
    c.append(req("http10", "HTTP/1.0 without keep-alive", [], method=b"GET", version=b"HTTP/1.0"))
    c.append(req("http10-keepalive", "HTTP/1.0 with `Connection: keep-alive`",
                 [b"Connection: keep-alive"], method=b"GET", version=b"HTTP/1.0"))
    c.append(req("http10-te-chunked", "HTTP/1.0 with Transfer-Encoding: chunked and a CL",
                 [b"Transfer-Encoding: chunked", cl(len(CLTE_BODY))], CLTE_BODY, version=b"HTTP/1.0"))
    head = b"POST / HTTP/1.1\r\nHost: " + HOST + b"\r\nExpect: 100-continue\r\n" + cl(5) + b"\r\n\r\n"
    c.append(Case("expect-100", "request", "`Expect: 100-continue`; the body is sent after the 100 (or 1 s)",
                  [head, WAIT100, b"hello"]))
    c.append(req("expect-unknown", "`Expect: something-else`", [b"Expect: something-else", cl(5)], b"hello"))
    c.append(Case("expect-100-then-smuggle", "request",
                  "`Expect: 100-continue` with CL 0, then a second request right away",
                  [b"POST / HTTP/1.1\r\nHost: " + HOST + b"\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n"
                   + SMUG], sent=2, methods=["POST", "GET"]))
    g = b"GET /p1 HTTP/1.1\r\nHost: " + HOST + b"\r\n\r\n"
    c.append(Case("pipelined-get-get", "request", "two GETs in one write", [g + g.replace(b"/p1", b"/p2")],
                  sent=2, methods=["GET", "GET"]))
    p = b"POST /p1 HTTP/1.1\r\nHost: " + HOST + b"\r\nContent-Length: 5\r\n\r\nhello"
    c.append(Case("pipelined-post-get", "request", "POST with a CL body then a GET, one write",
                  [p + g.replace(b"/p1", b"/p2")], sent=2, methods=["POST", "GET"]))
    c.append(req("header-long-10k", "one 10 KiB header line", [b"X-Long: " + b"a" * 10240], method=b"GET"))
    c.append(req("header-long-70k", "one 70 KiB header line (over 64 KiB)", [b"X-Long: " + b"a" * 70000],
                 method=b"GET"))
    c.append(req("get-with-body", "GET with a CL body", [cl(5)], b"hello", method=b"GET"))
    c.append(req("get-with-body-request", "GET whose CL body is a whole request", [cl(len(SMUG))], SMUG,
                 method=b"GET"))
    c.append(req("head-with-body", "HEAD with a CL body", [cl(5)], b"hello", method=b"HEAD"))
    c.append(req("upgrade-not-accepted", "Upgrade: websocket with a body, pod answers 200 (no 101)",
                 [b"Connection: Upgrade", b"Upgrade: websocket", cl(len(SMUG))], SMUG, method=b"GET"))
    return c


R200 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
POISON = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npoisoned\n"


def resp(name, desc, raw, method=b"GET", close_after=False, parts=None, extra_head=()):
    lines = [method + b" /r HTTP/1.1", b"Host: " + HOST] + list(extra_head)
    raw_req = b"\r\n".join(lines) + b"\r\n\r\n"
    return Case(name, "response", desc, raw_req, response=parts if parts is not None else raw,
                close_after=close_after)


def response_cases():
    gz = gzip.compress(b"hello, gzip\n")
    c = [
        resp("r-baseline", "plain 200 with Content-Length", R200),
        resp("r-cl-te", "CL: 3 and TE: chunked; the CL reading leaves a response behind",
             b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"5\r\nhello\r\n0\r\n\r\n"),
        resp("r-te-gzip-cl", "TE: gzip (not chunked) with a CL; body ends at close",
             b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n" + gz, close_after=True),
        resp("r-te-gzip", "TE: gzip alone; body ends at close", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"
             + gz, close_after=True),
        resp("r-cl-differing", "Content-Length: 5 and Content-Length: 14",
             b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 14\r\n\r\nhello" + POISON),
        resp("r-cl-equal", "Content-Length: 5 twice",
             b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        resp("r-conn-content-length", "`Connection: content-length` on the response",
             b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello"),
        resp("r-conn-transfer-encoding", "`Connection: transfer-encoding` on a chunked response",
             b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"5\r\nhello\r\n0\r\n\r\n"),
        resp("r-103-then-200", "103 Early Hints then 200",
             b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" + R200),
        resp("r-100-unsolicited", "100 Continue to a request without Expect, then 200",
             b"HTTP/1.1 100 Continue\r\n\r\n" + R200),
        resp("r-101-unsolicited", "101 Switching Protocols to a plain GET",
             b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + POISON),
        resp("r-204-body", "204 followed by body bytes (a whole response)",
             b"HTTP/1.1 204 No Content\r\n\r\n" + POISON),
        resp("r-204-cl", "204 with Content-Length: 9 and body bytes",
             b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\npoisoned\n"),
        resp("r-304-cl", "304 with Content-Length: 10 and no body",
             b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n",
             extra_head=[b"If-None-Match: \"x\""]),
        resp("r-head-cl", "HEAD answered with Content-Length: 5, no body",
             b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", method=b"HEAD"),
        resp("r-head-body", "HEAD answered with a body anyway (a whole response)",
             b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + POISON, method=b"HEAD"),
        resp("r-status-malformed", "status line `HTTP/1.1 2OO OK`", b"HTTP/1.1 2OO OK\r\nContent-Length: 5\r\n\r\nhello"),
        resp("r-status-no-reason", "status line `HTTP/1.1 200` (no reason, no space)",
             b"HTTP/1.1 200\r\nContent-Length: 5\r\n\r\nhello"),
        resp("r-bare-lf", "response lines ending in bare LF", b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello"),
        resp("r-body-longer-than-cl", "Content-Length: 5 followed by a whole second response, one write",
             R200 + POISON),
        resp("r-body-longer-late", "Content-Length: 5, then a whole second response 50 ms later",
             None, parts=[(0, R200), (0.05, POISON)]),
        resp("r-cl-plus", "Content-Length: +5", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"),
        resp("r-chunk-size-bad", "chunked response with chunk size `zz`",
             b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        resp("r-chunked-trailers", "chunked response with a trailer",
             b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
        resp("r-obs-fold", "response header folded on two lines",
             b"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 5\r\n\r\nhello"),
        resp("r-nul-in-header", "NUL in a response header value",
             b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello"),
        resp("r-http10-no-length", "HTTP/1.0 response without length, body until close",
             b"HTTP/1.0 200 OK\r\n\r\nhello", close_after=True),
    ]
    return c


def general_path_twins(cases):
    """The response cases again, through kactivator's general (hyper) path: its fast path hands
    any request with `Expect` to hyper. nginx sees the same request (it answers Expect itself)."""
    out = []
    for c in cases:
        raw = c.parts[0].replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n", 1)
        t = Case(c.name + "@general", c.kind, c.desc + " (general path: request carries `Expect`)", raw,
                 methods=c.methods)
        t.response = c.response
        out.append(t)
    return out


# Request cases the fast path serves, sent again through the general (hyper) path.
GENERAL_REQUESTS = ("conn-content-length", "conn-keepalive-content-length", "conn-host", "conn-custom",
                    "conn-close-body", "bare-lf-hides-cl", "get-with-body-request", "head-with-body",
                    "pipelined-post-get", "cl-leading-zeros", "cl-spaces")


def request_general_twins(cases):
    """Fast-path request cases again with `Expect: 100-continue` after the request line, which
    sends them to kactivator's general path."""
    out = []
    for c in cases:
        if c.name not in GENERAL_REQUESTS:
            continue
        raw = c.parts[0].replace(b"\r\n", b"\r\nExpect: 100-continue\r\n", 1)
        out.append(Case(c.name + "@general", c.kind, c.desc + " (general path: with `Expect`)", raw,
                        sent=c.sent, methods=c.methods))
    return out


def all_cases():
    requests, responses = request_cases(), response_cases()
    return requests + request_general_twins(requests) + responses + general_path_twins(responses)
