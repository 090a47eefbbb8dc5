#!/usr/bin/env bash
# The container image's binary, run as a container runtime would run it, without Docker.
#
# Builds the static binary with scripts/build-static.sh (the Dockerfile's build), then runs it
# as uid 65532 in an empty, read-only root holding only what a runtime gives a `FROM scratch`
# container: the binary, /etc/hosts and /etc/resolv.conf bind-mounted, /dev with null, zero,
# full, tty, random and urandom, and /proc. It checks:
#   1. `--version` and `--check-config` of a mounted config file;
#   2. an activator (static discovery) proxying one request to a backend outside the root,
#      its autoscaler named `autoscaler.knative-serving.svc.cluster.local` and found through
#      the resolv.conf search list and a stub DNS server, as in a pod; stats connection up;
#   3. the same with no /dev/random and /dev/urandom at all and the autoscaler named only in
#      /etc/hosts: randomness comes from the getrandom syscall, names need no NSS module;
#   4. a TLS handshake with the adapter (ring's key exchange and randomness) in that root;
#   5. a clean exit on SIGTERM.
# Exits non-zero on any failure. Needs root (mount namespaces, chroot, port 53 for the stub
# DNS), util-linux, curl, python3 and openssl; without them it says SKIPPED and exits 0.
#
# Usage: scripts/static-image.sh            (build, then run)
#        KACTIVATOR_STATIC_BIN=path scripts/static-image.sh   (run a binary built earlier)
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
  echo "static-image: SKIPPED ($*)"
  exit 0
}
fail() {
  echo "static-image: FAILED: $*" >&2
  exit 1
}

# Polls `cmd...` until it succeeds, for at most $1 seconds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

[[ "$(uname -s)" == Linux ]] || skip "needs Linux namespaces"
[[ "$(id -u)" == 0 ]] || skip "needs root for mount namespaces and chroot; run it as root, as CI does"
for tool in unshare chroot mount curl python3 openssl readelf strip; do
  command -v "$tool" >/dev/null || skip "$tool is not installed"
done
unshare --mount --pid --fork true 2>/dev/null || skip "unshare --mount --pid is not permitted here"

work="$(mktemp -d /tmp/kactivator-static.XXXXXX)"
chmod 755 "$work"
pids=()  # helpers outside the root
roots=() # unshare processes; they ignore SIGTERM, and their death sends SIGTERM to the binary
cleanup() {
  for pid in "${roots[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- the binary -------------------------------------------------------------------------------
if [[ -n "${KACTIVATOR_STATIC_BIN:-}" ]]; then
  cp "$KACTIVATOR_STATIC_BIN" "$work/kactivator"
  strip "$work/kactivator"
else
  scripts/build-static.sh "$work/kactivator"
fi
chmod 755 "$work/kactivator"
readelf -l "$work/kactivator" | grep -q INTERP && fail "the binary has a program interpreter (not static)"
size=$(stat -c %s "$work/kactivator")
echo "static-image: stripped binary: $size bytes ($(awk -v b="$size" 'BEGIN { printf "%.2f", b / 1048576 }') MiB)"

# --- the empty root ---------------------------------------------------------------------------
# Runs "$@" (the binary's arguments) as uid/gid 65532 in a fresh read-only tmpfs root. Executed
# by `unshare --mount --pid --fork`, so every mount vanishes with the namespace. $1: `container`
# for a runtime's /dev, `bare` for one without random/urandom.
enter_root() {
  set -euo pipefail
  local devs="$1" work="$2"
  shift 2
  local root="$work/root"
  mkdir -p "$root"
  mount -t tmpfs -o mode=755,size=1m root "$root"
  mkdir -p "$root/dev" "$root/proc" "$root/etc/kactivator"
  touch "$root/kactivator" "$root/etc/hosts" "$root/etc/resolv.conf"
  mount --bind -o ro "$work/kactivator" "$root/kactivator"
  mount --bind -o ro "$work/hosts" "$root/etc/hosts"
  mount --bind -o ro "$work/resolv.conf" "$root/etc/resolv.conf"
  mount --bind -o ro "$work/config" "$root/etc/kactivator"
  mount -t tmpfs -o mode=755,size=64k,nosuid,noexec dev "$root/dev"
  local dev_nodes=(null zero full tty random urandom)
  [[ "$devs" == bare ]] && dev_nodes=(null zero full tty)
  for d in "${dev_nodes[@]}"; do
    touch "$root/dev/$d"
    mount --bind "/dev/$d" "$root/dev/$d"
  done
  mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
  mount -o remount,bind,ro "$root"
  exec chroot --userspec=65532:65532 --groups=65532 "$root" /kactivator "$@"
}

# `in_root container|bare ARGS...`: the binary in the empty root, in its own mount and PID
# namespaces. This process becomes unshare, whose only child is the binary (PID 1 there);
# unshare itself ignores SIGTERM while it waits, so signals go to the child (see `stop`).
in_root() {
  exec unshare --mount --pid --fork --kill-child=SIGTERM --propagation private \
    bash -c "$(declare -f enter_root); enter_root \"\$@\"" enter_root "$1" "$work" "${@:2}"
}

# Free loopback ports, reserved together so that they differ.
read -r p_backend p_http p_h2c p_admin p_grpc p_as p_as_admin p_as2 p_as2_admin < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(9)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')

# A backend outside the root (same network namespace, as a pod on the node network would be).
mkdir -p "$work/www"
echo "hello from the backend" >"$work/www/index.html"
echo ok >"$work/www/healthz"
python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$p_backend" >"$work/backend.log" 2>&1 &
pids+=("$!")

# The cluster DNS, answering the autoscaler's Service name; the search list and ndots are a
# pod's (in namespace knative-serving).
# A random loopback address, so that two runs (or a local resolver on 127.0.0.53) do not collide.
dns_ip="127.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1)).53"
python3 scripts/dns-stub.py "$dns_ip" 53 autoscaler.knative-serving.svc.cluster.local=127.0.0.1 \
  >"$work/dns.log" 2>&1 &
dns_pid=$!
pids+=("$dns_pid")
if ! wait_for 10 grep -q listening "$work/dns.log"; then
  cat "$work/dns.log" >&2
  fail "the stub DNS server did not start on $dns_ip:53"
fi
cat >"$work/resolv.conf" <<EOF
search knative-serving.svc.cluster.local svc.cluster.local cluster.local
nameserver $dns_ip
options ndots:5
EOF
# As the kubelet writes it, plus a hostAliases entry.
cat >"$work/hosts" <<EOF
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
127.0.0.1	kactivator-0
127.0.0.1	stats.example.internal
EOF

# Two autoscalers outside the root: the peers of the two activator runs.
autoscaler() { # port admin_port
  cat >"$work/autoscaler-$1.yaml" <<EOF
listen:
  autoscaler: 127.0.0.1:$1
  admin: 127.0.0.1:$2
discovery: local
EOF
  "$work/kactivator" --mode autoscaler --config "$work/autoscaler-$1.yaml" >"$work/autoscaler-$1.log" 2>&1 &
  pids+=("$!")
}
autoscaler "$p_as" "$p_as_admin"
autoscaler "$p_as2" "$p_as2_admin"

mkdir -p "$work/config"
chmod 755 "$work/config"
activator_config() { # autoscaler_url
  cat >"$work/config/kactivator.yaml" <<EOF
listen:
  http: 127.0.0.1:$p_http
  h2c: 127.0.0.1:$p_h2c
  admin: 127.0.0.1:$p_admin
  grpc: 127.0.0.1:$p_grpc
autoscaler:
  url: $1
discovery: static
revisions:
  - namespace: default
    name: hello
    hosts: [hello.example.com]
    endpoints: ["127.0.0.1:$p_backend"]
adapter:
  tls:
    cert: /etc/kactivator/tls.crt
    key: /etc/kactivator/tls.key
EOF
  chmod 644 "$work/config/"*
}

stats_up() {
  curl -fsS "http://127.0.0.1:$p_admin/metrics" |
    grep -Eq '^kn_activator_stats_conn_reachable\{peer="autoscaler"\} 1$'
}

# Adapter TLS material (the adapter run shows ring working in the root).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$work/config/tls.key" -out "$work/config/tls.crt" >/dev/null 2>&1 ||
  fail "openssl could not make a test certificate"

# --- 1. --version, --check-config -----------------------------------------------------------
activator_config "ws://autoscaler.knative-serving.svc.cluster.local:$p_as"
version="$(in_root container --version)" || fail "--version in the empty root"
echo "static-image: --version: $version"
[[ "$version" == kactivator\ * ]] || fail "unexpected --version output: $version"
(in_root container --check-config --config /etc/kactivator/kactivator.yaml) ||
  fail "--check-config in the empty root"
echo "static-image: --check-config: ok"

# --- 2, 3. a proxied request and the stats connection, in both roots --------------------------
serve() { # devs autoscaler_url what
  local devs="$1" url="$2" what="$3"
  activator_config "$url"
  wait_for 10 curl -fsS "http://127.0.0.1:$p_backend/healthz" || fail "backend did not start"
  in_root "$devs" --mode activator --config /etc/kactivator/kactivator.yaml \
    >"$work/activator-$devs.log" 2>&1 &
  local pid=$!
  roots+=("$pid")
  if ! wait_for 20 curl -fsS "http://127.0.0.1:$p_admin/healthz"; then
    cat "$work/activator-$devs.log" >&2
    fail "[$what] the activator did not come up in the empty root"
  fi
  local body
  body="$(curl -fsS --max-time 10 -H 'Host: hello.example.com' "http://127.0.0.1:$p_http/")" || {
    cat "$work/activator-$devs.log" >&2
    fail "[$what] the proxied request failed"
  }
  [[ "$body" == "hello from the backend" ]] || fail "[$what] unexpected body: $body"
  echo "static-image: [$what] proxied request: ok ($body)"
  as_container "$pid" "$what"
  if ! wait_for 15 stats_up; then
    cat "$work/activator-$devs.log" >&2
    fail "[$what] the stats connection to $url did not come up"
  fi
  echo "static-image: [$what] stats connection to $url: up"
  stop "$pid" "$work/activator-$devs.log" "$what"
}

# The binary (unshare's child) runs as 65532:65532 with a read-only root holding only our mounts.
as_container() { # unshare_pid what
  local child
  child="$(pgrep -P "$1")" || fail "[$2] the binary is gone"
  grep -Eq '^Uid:\s+65532\s+65532\s+65532\s+65532$' "/proc/$child/status" || fail "[$2] not running as uid 65532"
  grep -Eq '^Gid:\s+65532\s+65532\s+65532\s+65532$' "/proc/$child/status" || fail "[$2] not running as gid 65532"
  # mountinfo, as the binary sees it: field 5 is the mount point, field 6 its options.
  awk '$5 == "/" { print $6 }' "/proc/$child/mountinfo" | grep -q '^ro,' || fail "[$2] the root is not read-only"
  local mounts
  mounts="$(awk '{ print $5 }' "/proc/$child/mountinfo" | sort | tr '\n' ' ')"
  echo "static-image: [$2] uid/gid 65532, read-only root; mounts: $mounts"
}

# SIGTERM to the binary itself (the PID namespace's init, unshare's child); unshare then exits
# with the binary's status.
stop() { # unshare_pid log what
  local child
  child="$(pgrep -P "$1")" || fail "[$3] the binary is gone before SIGTERM"
  kill -TERM "$child"
  # A watchdog, so that a binary that ignores SIGTERM fails the run instead of hanging it.
  (sleep 40 && kill -KILL "$child") 2>/dev/null &
  local watchdog=$!
  local rc=0
  wait "$1" || rc=$?
  kill "$watchdog" 2>/dev/null || true
  [[ "$rc" == 0 ]] || {
    cat "$2" >&2
    fail "[$3] exit status $rc after SIGTERM"
  }
  echo "static-image: [$3] SIGTERM: clean exit"
}
serve container "ws://autoscaler.knative-serving.svc.cluster.local:$p_as" "DNS name, runtime /dev"
grep -q 'autoscaler.knative-serving.svc.cluster.local type 1 -> A' "$work/dns.log" ||
  fail "the stub DNS server was never asked for the autoscaler"
serve bare "ws://stats.example.internal:$p_as2" "/etc/hosts name, no /dev/random or /dev/urandom"

# --- 4. TLS (ring) in the root without /dev/random or /dev/urandom ------------------------------
what="adapter TLS, no /dev/random or /dev/urandom"
activator_config "ws://stats.example.internal:$p_as2"
in_root bare --mode adapter --config /etc/kactivator/kactivator.yaml >"$work/adapter.log" 2>&1 &
adapter_pid=$!
roots+=("$adapter_pid")
handshake() {
  openssl s_client -connect "127.0.0.1:$p_grpc" -servername localhost -alpn h2 \
    -CAfile "$work/config/tls.crt" -verify_return_error </dev/null 2>&1 |
    tee "$work/s_client.log" | grep -q 'Verify return code: 0 (ok)'
}
if ! wait_for 20 handshake; then
  cat "$work/adapter.log" "$work/s_client.log" >&2
  fail "[$what] no TLS handshake with the adapter"
fi
echo "static-image: [$what] handshake: $(grep -a -m1 'Cipher is' "$work/s_client.log")"
stop "$adapter_pid" "$work/adapter.log" "$what"

echo "static-image: all checks passed ($size bytes stripped)"
