# syntax=docker/dockerfile:1
# One image for every Countersign pod: `countersign controller`, `countersign bot`, the agent
# pods (`countersign agent`) and the provider gateway. Build (docs/install.md):
#   docker build -t countersign:dev .
# The runtime stage is Debian slim: agent pods run the Agent's `verify` and `command`
# providers through /bin/sh, and git2 needs OpenSSL and CA certificates for HTTPS. It holds
# only what the binary links dynamically (checked by tests/image.rs against `ldd`).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The release profile strips symbols (Cargo.toml [profile.release]).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin countersign \
 && install -m 0755 target/release/countersign /countersign

FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim AS runtime
# libssl3: git2's HTTPS (libssl.so.3, libcrypto.so.3); ca-certificates: GitHub's and the
# model providers' certificates. libc6, libgcc-s1 and zlib1g are part of the base image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /countersign /usr/local/bin/countersign
# Non-root (the chart's runAsUser/runAsGroup), nothing written outside mounted volumes: the
# root filesystem can be read-only; HOME points at the writable /tmp the chart mounts.
ENV HOME=/tmp
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/countersign"]
CMD ["--help"]
