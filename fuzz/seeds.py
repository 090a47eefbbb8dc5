#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every fuzz target into fuzz/corpus/<target>/seed-*.

Realistic inputs only (heads from the unit tests, golden wire vectors from
/work/shared/vectors/README.md, hand-encoded protobuf requests); the fuzzer grows the rest.
Run from the repository root: python3 fuzz/seeds.py
"""
import hashlib
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- HTTP heads -------------------------------------------------------------------------
REQUESTS = [
    "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    "GET / HTTP/1.1\r\nhost: API.example.com\r\nconnection: close\r\n\r\n",
    "POST /a/b?c=d HTTP/1.1\r\nHost: Hello.Prod:8080\r\nConnection: keep-alive, X-Hop\r\n"
    "x-hop: 1\r\nKeep-Alive: timeout=5\r\nX-Case: V\r\nTE: gzip, trailers\r\n"
    "Knative-Serving-Revision: hello\r\nknative-serving-namespace: prod\r\n"
    "K-Proxy-Request: spoofed\r\nContent-Length: 3\r\n\r\nabc",
    "HEAD / HTTP/1.1\r\nhost: hello.prod.svc.cluster.local\r\nk-original-host: first\r\n\r\n",
    "PUT /upload HTTP/1.1\r\nHost: hello.prod.svc\r\nContent-Type: application/json\r\n"
    "Content-Length: 2\r\n\r\n{}",
    "POST / HTTP/1.1\r\nhost: api.example.com\r\ntransfer-encoding: chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nhost: api.example.com\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n",
    "GET / HTTP/1.1\r\nhost: api.example.com\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
    "POST / HTTP/1.1\r\nhost: api.example.com\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
    "GET / HTTP/1.1\r\nhost: grpc.prod\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nhost: api.example.com\r\n\r\n",
    "DELETE /x HTTP/1.1\r\nHost: api.example.com\r\nConnection: Proxy-Connection, x-a\r\n"
    "Proxy-Connection: keep-alive\r\nx-a: 1\r\nContent-Length: 0\r\n\r\n",
    "POST /x HTTP/1.1\r\nHost: api.example.com\r\nConnection: a, b\r\nContent-Length: 3\r\n"
    "TE: trailers\r\n\r\nabc",
]
for r in REQUESTS:
    write("request_head", r.encode())

RESPONSES = [
    "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
    "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
    "HTTP/1.1 200 OK\r\n\r\n",
    "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
    "HTTP/1.1 204 No Content\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\n",
    "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n",
    "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nx",
    "HTTP/1.1 200 Fine\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
    "X-Kept: 1\r\nDate: x\r\ncontent-length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nConnection: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
    "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 9\r\n\r\n",
    "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: grpc-status\r\n\r\n",
]
for r in RESPONSES:
    for flags in (0, 1, 2, 4):
        write("response_head", bytes([flags]) + r.encode())

BODIES = [
    b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
    b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\nx-t: 1\r\n\r\n",
    b"A\r\n0123456789\r\n0\r\nx: y\r\n\r\n",
    b"0\r\n\r\n",
    b"ffffffff\r\n",
    b"1 ; a=b\r\nx\r\n0\r\n\r\n",
]
for b in BODIES:
    write("chunked", b"\x00" + b)
    write("chunked", b"\x03\x02\x05\x01" + b)


# --- gob and protobuf stats ---------------------------------------------------------------
GOB = [
    "2bff810301010b537461744d65737361676501ff8200010201034b6579010c0001045374617401ff84000000ff94ff83030101045374617401ff84000106010454696d6501ff86000107506f644e616d65010c00011941766572616765436f6e63757272656e74526571756573747301080001204176657261676550726f78696564436f6e63757272656e745265717565737473010800010c52657175657374436f756e74010400011350726f7869656452657175657374436f756e7401040000000aff85050102ff8800000028ff82011b64656661756c742f68656c6c6f776f726c642d676f2d30303030310103fef03f02020000",
    "2bff810301010b537461744d65737361676501ff8200010201034b6579010c0001045374617401ff84000000ff94ff83030101045374617401ff84000106010454696d6501ff86000107506f644e616d65010c00011941766572616765436f6e63757272656e74526571756573747301080001204176657261676550726f78696564436f6e63757272656e745265717565737473010800010c52657175657374436f756e74010400011350726f7869656452657175657374436f756e7401040000000aff85050102ff8800000030ff82011364656661756c742f68656c6c6f2d303030303101020e6b616374697661746f722d61626301fef03f02020000",
]
PB = [
    "0a320a0764656661756c74121368656c6c6f776f726c642d676f2d30303030311a1211000000000000f03f21000000000000f03f",
    "0a390a0764656661756c74120b68656c6c6f2d30303030311a210a0d616374697661746f722d61626311000000000000f03f21000000000000f03f",
]
for h in GOB:
    write("gob", bytes.fromhex(h))
    write("stats_frame", bytes.fromhex(h))
for h in PB:
    write("stats_frame", bytes.fromhex(h))


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def ld(field, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def double(field, v):
    return varint(field << 3 | 1) + struct.pack("<d", v)


def entry(k, v):
    return ld(1, k) + ld(2, v)


# A stat with every figure set, and one with a NaN (the decoder zeroes non-finite figures).
stat = ld(1, "pod-1") + double(2, 2.5) + double(3, 1.0) + double(4, 10) + double(5, 4) + double(6, 9.5)
write("stats_frame", ld(1, ld(1, "prod") + ld(2, "hello") + ld(3, stat)))
write("stats_frame", ld(1, ld(1, "prod") + ld(2, "hello") + ld(3, double(2, float("nan")))))

# Mixer authorization: action { namespace, service }, adapter_config Any(Params).
params = ld(1, "ws://autoscaler.knative-serving:8080")
any_params = ld(1, "type.googleapis.com/adapter.kactivator.config.Params") + ld(2, params)
for ns, svc in [("default", "hello-private.default.svc.cluster.local"), ("prod", "hello-priv"),
                ("prod", "hello:8080"), (" prod ", "Hello")]:
    action = ld(1, ns) + ld(2, svc) + ld(3, "GET") + ld(4, "/")
    instance = ld(2, action) + ld(72295727, "authorization.instance.istio-system")
    write("adapter_proto", b"\x00" + ld(1, instance) + ld(2, any_params) + ld(3, "dedup-1"))

# Mixer metric: dimensions map<string, Value{string_value=1 | dns_name_value=9{value=1}}>.
def dims(pairs):
    out = b""
    for k, v, dns in pairs:
        value = ld(9, ld(1, v)) if dns else ld(1, v)
        out += ld(2, ld(1, k) + ld(2, value))
    return out

for pairs in [
    [("revision", "hello", False), ("namespace", "prod", False)],
    [("service", "hello-private.prod.svc.cluster.local", True)],
    [("service", "hello", False), ("namespace", "default", False)],
]:
    write("adapter_proto", b"\x01" + ld(1, dims(pairs) + ld(72295727, "requestcount.metric")) + ld(2, any_params))

# ext_authz Check: attributes.request.http { headers map, host, header_map }.
def check(http):
    return b"\x02" + ld(1, ld(4, ld(2, http)))

write("adapter_proto", check(ld(2, "GET") + ld(4, "/") + ld(5, "api.example.com")))
write("adapter_proto", check(ld(5, "hello.prod.svc.cluster.local:80")))
write("adapter_proto", check(ld(3, entry("knative-serving-revision", "hello")) + ld(3, entry("knative-serving-namespace", "prod")) + ld(5, "x")))
write("adapter_proto", check(ld(13, ld(1, ld(1, ":authority") + ld(3, b"hello.prod.svc")) + ld(1, ld(1, "Host") + ld(2, "api.example.com")))))
write("adapter_proto", b"\x03" + params)

# --- configuration ------------------------------------------------------------------------
here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = [
    "revisions:\n  - name: hello\n    namespace: prod\n    hosts: [api.example.com]\n  - name: grpc\n    namespace: prod\n    protocol: h2c\n",
    "",
    "cluster_domain: example.internal\nactivator:\n  queue_depth: 10\n  max_retries: 3\n  max_header_bytes: 4096\n  queue_timeout: 2s\n",
    "discovery: kubernetes\nkubernetes:\n  namespace: prod\n  service_suffix: -private\n  port_name: http\nrevisions:\n  - {name: a, namespace: prod, hosts: [A.example.com, b.example.com], timeout: 30s}\n",
    "autoscaler:\n  url: ws://autoscaler:8080\n  encoding: gob\nadapter:\n  check_valid_use_count: 5\n  poke_interval: 1s\n",
]
for c in CONFIGS:
    write("config", c.encode())
for name in ("kactivator.yaml",):
    with open(os.path.join(here, name), "rb") as f:
        write("config", f.read())
