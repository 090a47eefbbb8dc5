#!/usr/bin/env python3
"""A minimal UDP DNS server for scripts/static-image.sh: stands in for a cluster's DNS.

Usage: dns-stub.py LISTEN_IP PORT NAME=IPV4 [NAME=IPV4 ...]

Answers A queries for the given fully qualified names, NODATA for other record types of those
names, NXDOMAIN for every other name; logs each question on stderr so that the caller can show
which names (search-list candidates) were asked.
"""
import socket
import struct
import sys


def parse_question(msg):
    labels, i = [], 12
    while True:
        n = msg[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0:  # compression is not used in questions
            raise ValueError("compressed question")
        labels.append(msg[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    qtype, qclass = struct.unpack("!HH", msg[i : i + 4])
    return ".".join(labels).lower(), qtype, qclass, msg[12 : i + 4]


def answer(msg, records):
    (qid, flags, qdcount) = struct.unpack("!HHH", msg[:6])
    if qdcount != 1:
        return None
    name, qtype, _qclass, question = parse_question(msg)
    rd = flags & 0x0100
    known = name.rstrip(".") in records
    rcode = 0 if known else 3
    answers = b""
    ancount = 0
    if known and qtype == 1:
        ip = socket.inet_aton(records[name.rstrip(".")])
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + ip
        ancount = 1
    print(f"dns-stub: {name} type {qtype} -> {'A ' + records[name.rstrip('.')] if ancount else ('NODATA' if known else 'NXDOMAIN')}",
          file=sys.stderr, flush=True)
    header = struct.pack("!HHHHHH", qid, 0x8000 | 0x0400 | rd | 0x0080 | rcode, 1, ancount, 0, 0)
    return header + question + answers


def main():
    ip, port = sys.argv[1], int(sys.argv[2])
    records = dict(arg.lower().rstrip(".").split("=", 1) for arg in sys.argv[3:])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ip, port))
    print(f"dns-stub: listening on {ip}:{port}", file=sys.stderr, flush=True)
    while True:
        msg, peer = sock.recvfrom(512)
        try:
            reply = answer(msg, records)
        except (ValueError, IndexError, struct.error):
            continue
        if reply:
            sock.sendto(reply, peer)


if __name__ == "__main__":
    main()
