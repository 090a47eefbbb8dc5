#!/usr/bin/env bash
# A/B of two kactivator builds on the warm HTTP/1.1 path: each binary in turn on one pinned core
# (one worker) in front of the same nginx backend, `wrk -t1 -c64 -d5s` on the other core,
# alternating, REPS times; prints req/s, p99 and the proxy's CPU per request of every run.
#
#   benches/ab.sh OLD_BINARY NEW_BINARY [REPS]     (needs nginx, wrk, curl, taskset)
set -euo pipefail
old="$1" new="$2" reps="${3:-6}"
work="$(mktemp -d)"
trap 'nginx -c "$work/nginx.conf" -s stop 2>/dev/null || true; rm -rf "$work"' EXIT
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:19080; keepalive_requests 1000000; location / { return 200 "hello\n"; } } }
CONF
cat >"$work/k.yaml" <<CONF
listen:
  http: 127.0.0.1:19012
  h2c: 127.0.0.1:19013
  admin: 127.0.0.1:19090
  grpc: 127.0.0.1:19091
  autoscaler: 127.0.0.1:19092
discovery: static
activator:
  probe_style: tcp
revisions:
  - name: warm
    hosts: [warm.bench]
    endpoints: [127.0.0.1:19080]
CONF
nginx -c "$work/nginx.conf"
for rep in $(seq "$reps"); do
  for v in old new; do
    bin="$old"; [[ $v == new ]] && bin="$new"
    TOKIO_WORKER_THREADS=1 RUST_LOG=warn taskset -c 1 "$bin" --mode activator --config "$work/k.yaml" \
      >"$work/$v.log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do curl -s -o /dev/null -H 'Host: warm.bench' 127.0.0.1:19012/ && break; sleep 0.1; done
    t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    out=$(taskset -c 0 wrk -t1 -c64 -d5s --latency -H 'Host: warm.bench' http://127.0.0.1:19012/)
    t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    n=$(awk '/requests in/{print $1}' <<<"$out")
    ticks=$(getconf CLK_TCK)
    echo "$v rep$rep rps=$(awk '/Requests\/sec/{print $2}' <<<"$out") p99=$(awk '/ 99%/{print $2}' <<<"$out")" \
      "cpu_us_per_req=$(python3 -c "print(round(($t1 - $t0) * 1e6 / $ticks / $n, 2))")"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
