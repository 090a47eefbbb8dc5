# One static binary on `scratch`, run as a non-root user. Build: docker build -t kactivator .
#
# The binary is glibc with `+crt-static` (scripts/build-static.sh, the build that
# scripts/static-image.sh runs in an empty read-only root as uid 65532, without Docker, and
# checks: --version, a config, a proxied request, DNS and /etc/hosts names, TLS). Nothing else
# is needed in the image: the runtime mounts /etc/hosts, /etc/resolv.conf, /dev and /proc; the
# config comes from a ConfigMap at /etc/kactivator.
#
# The builder is the toolchain CI tests with (Cargo.toml's rust-version is the oldest that
# compiles); bookworm's glibc 2.36 has the built-in name sources a static binary needs.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/build-static.sh /kactivator

FROM scratch
COPY --from=build /kactivator /kactivator
USER 65532:65532
# activator HTTP/1.1 + h2c, h2c, adapter gRPC, autoscaler stats websocket, admin (metrics, probes)
EXPOSE 8012 8013 6100 8080 9090
ENTRYPOINT ["/kactivator"]
# No CMD: Knative's activator Deployment passes no arguments, and with no config file kactivator
# chooses its in-pod defaults (docs/operations.md). manifests/activator and manifests/adapter pass
# their own `--config`.
