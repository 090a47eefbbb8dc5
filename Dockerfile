# One static binary on scratch. Build: docker build -t kactivator .
# (Docker cannot run on the machine this was written on; the same static build is exercised by
#  `cargo build --release --target x86_64-unknown-linux-musl` where that target is installed.)
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
    && cp target/x86_64-unknown-linux-musl/release/kactivator /kactivator

FROM scratch
COPY --from=build /kactivator /kactivator
USER 65532:65532
EXPOSE 8012 8013 6100 8080 9090
ENTRYPOINT ["/kactivator"]
CMD ["--mode", "activator", "--config", "/etc/kactivator/kactivator.yaml", "--log-format", "json"]
