#!/usr/bin/env bash
# Differential test of kactivator vs nginx on ambiguous HTTP/1.1 requests and responses
# (docs/differential.md). Exit status: 0 no UNSAFE case, 1 some UNSAFE case, 2 harness failure.
#
#   benches/differential/run.sh                  install nginx if missing, build kactivator, run all
#   benches/differential/run.sh --binary PATH    use this kactivator binary (no cargo build)
#   benches/differential/run.sh --only a,b       some cases (--list prints them)
#
# Other options go to harness.py (--csv, --md, --work; --md '' skips the markdown; --report-only
# rewrites the markdown from the CSV after an edit of notes.py).
set -euo pipefail
caller="$PWD"
cd "$(dirname "$0")/../.."

binary=""
args=()
while (($#)); do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --binary=*) binary="${1#--binary=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

if [[ -n "$binary" && "$binary" != /* ]]; then binary="$caller/$binary"; fi

command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 2; }
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
  echo "[differential] installing nginx (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nginx-light \
    || apt-get install -y -qq --no-install-recommends nginx
fi

if [[ -z "$binary" && " ${args[*]} " != *" --list "* && " ${args[*]} " != *" --report-only "* ]]; then
  echo "[differential] cargo build --release --locked --bin kactivator"
  nice -n 19 cargo build --release --locked --quiet --bin kactivator
  binary=target/release/kactivator
fi

exec python3 benches/differential/harness.py --binary "${binary:-target/release/kactivator}" "${args[@]}"
