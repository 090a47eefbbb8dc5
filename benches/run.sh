#!/usr/bin/env bash
# kactivator benchmarks on 127.0.0.1: warm path vs nginx, cold start (activator and adapter
# architectures), 10,000 buffered requests, adapter gRPC throughput. Results: benches/results/*.csv,
# docs/benchmarks.md, docs/benchmarks-coldstart.svg.
#
#   benches/run.sh            full run (~20 min on 2 cores)
#   benches/run.sh --quick    short run (under 3 minutes once built)
#   benches/run.sh --only warm,cold,hold,adapter,idle,kube [--trials N]
#   benches/run.sh --only warm --traces    warm path also with traces exported at 1 % sampling
#                                          (OTLP/gRPC to examples/bench_otlp_sink)
#   BENCH_BASELINE=/path/to/kactivator benches/run.sh --only warm   also measures that binary
#                                          (e.g. main's) on the warm path, for an off-vs-before check
#
# `kube` is benches/kube_scale.rs (`cargo bench --bench kube_scale`): discovery: kubernetes with
# 5,000 Revisions / 20,000 pods against the fake API server of tests/support, and the cold start
# from a private Endpoints event, for the activator and for the adapter (ext_authz Check by a
# Route's Host, the revision found through a fake KIngress); `cold` runs those cold-start rows
# too. Results on stdout and in benches/results/kube-*.csv.
#
# Installs nginx, wrk and h2load (nghttp2-client) with apt-get when missing, builds kactivator and
# the bench clients (examples/bench_*.rs) in release, then runs benches/bench.py (stdlib Python).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
  echo "[bench] installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }

echo "[bench] cargo build --release --bin kactivator --examples"
cargo build --release --quiet --bin kactivator --examples

# 10,000 held connections need > 10,000 descriptors in kactivator and in the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Which kube_scale phases the arguments ask for (all of them when --only is absent).
only="" trials=() args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [[ ${args[i]} == --only ]] && only=${args[i + 1]:-}
  [[ ${args[i]} == --trials ]] && trials=(--trials "${args[i + 1]:-30}")
done
kube=""
if [[ -z $only || ,$only, == *,kube,* ]]; then
  kube=scale,cold,adapter
elif [[ ,$only, == *,cold,* ]]; then
  kube=cold,adapter
fi

if [[ -z $only || ,$only, == *,@(warm|cold|hold|adapter|idle),* ]]; then
  python3 benches/bench.py "$@"
fi
if [[ -n $kube ]]; then
  echo "[bench] cargo bench --bench kube_scale -- --only $kube ${trials[*]}"
  cargo bench --quiet --bench kube_scale -- --only "$kube" "${trials[@]}"
fi
