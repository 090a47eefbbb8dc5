#!/usr/bin/env bash
# Builds the fully static release binary: the one build the Dockerfile and static-image.sh share.
#
# glibc with `+crt-static` rather than musl: it needs only the default Rust target (no musl
# toolchain). `--target` keeps the flag off build scripts and proc-macros, which must stay
# dynamic to be loaded by the compiler.
#
# The result needs nothing from the file system but what a runtime mounts into a `scratch`
# container: randomness comes from the getrandom syscall (see RUSTFLAGS below), and
# host names resolve through /etc/hosts and /etc/resolv.conf because glibc ≥ 2.34 builds its
# `files` and `dns` sources into libc itself: with no /etc/nsswitch.conf (none in the image) a
# static binary uses those two and dlopens nothing. Older glibc would need NSS modules that the
# image lacks, hence the version check. scripts/static-image.sh proves both in an empty root.
#
# Usage: scripts/build-static.sh [OUT]   (default OUT: target/static/kactivator, stripped)
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
out="${1:-target/static/kactivator}"

glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null || true)" # "glibc 2.36"
if ! [[ "$glibc" =~ ^glibc\ 2\.([0-9]+) ]] || ((BASH_REMATCH[1] < 34)); then
  echo "error: a static build needs glibc >= 2.34 (built-in files/dns name sources); found '${glibc:-none}'" >&2
  exit 1
fi

# getrandom 0.3/0.4 (rand, tungstenite's mask keys, ahash) find glibc's getrandom() with dlsym,
# which a static binary cannot do, and then fall back to opening /dev/urandom: absent in a
# root without /dev, and a panic in rand's ThreadRng. `linux_getrandom` calls getrandom()
# directly (Linux >= 3.17). ring's getrandom 0.2 and std make the syscall themselves.
RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"" \
  cargo build --release --locked --target "$target" --bin kactivator

mkdir -p "$(dirname "$out")"
cp "target/$target/release/kactivator" "$out"
strip "$out"

if readelf -l "$out" | grep -q 'INTERP'; then
  echo "error: $out has a program interpreter; it is not static" >&2
  exit 1
fi
size=$(stat -c %s "$out")
echo "built $out ($glibc, static): $size bytes stripped"
